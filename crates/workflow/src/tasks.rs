//! A run's tasks: the plan of a workflow on a recording turned into one [`TaskSpec`] per tile
//! (what each task reads and where it writes) and the tasks each waits for, plus a last `publish`
//! task that waits for all of them and turns the run's output into a result. The coordinator
//! builds them from a submitted workflow and a description of the recording (no pixels); workers
//! run them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tessera_core::task::{
    MovieSource, PUBLISH, Piece, RecordingInput, RunContext, TaskInput, TaskSpec,
};
use tessera_core::tiling::{Tile, TilePlan};

use crate::keys::{kinds, meets, sources, stage_of};
use crate::{DataKind, RecordingGeometry, Workflow, WorkflowError, cell_radius_px, plan};

/// Where a run goes and how it is tiled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunOptions {
    /// The run's output location, absolute; task outputs go to `<output>/tasks/<key>`.
    pub output: String,
    pub memory_budget: Option<u64>,
    pub tile_size: Option<u64>,
}

/// A run's tasks, in plan order with the publish task last.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTasks {
    pub plan: TilePlan,
    pub specs: Vec<TaskSpec>,
    /// For each task, the indices of the tasks it waits for (all smaller than its own).
    pub deps: Vec<Vec<usize>>,
    /// What the user should know (an assumed frame rate).
    pub warnings: Vec<String>,
}

fn hex_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The tasks of `workflow` on `input` (file names errors as `file`).
pub fn run_tasks(
    workflow: &Workflow,
    file: &str,
    input: &RecordingInput,
    options: &RunOptions,
) -> Result<RunTasks, WorkflowError> {
    let w = workflow;
    let shape = input.shape;
    let mut warnings = Vec::new();
    let mut meta = input.meta.clone();
    if let Some(r) = w.input.frame_rate_hz {
        meta.frame_rate_hz = Some(r);
    }
    if let Some(p) = w.input.pixel_size_um {
        meta.pixel_size_um = Some(p);
    }
    let invalid = |message: String| WorkflowError::Invalid {
        file: file.to_string(),
        diagnostics: vec![crate::Diagnostic {
            line: 1,
            column: 1,
            message,
        }],
    };
    let rate = match meta.frame_rate_hz {
        Some(r) if r.is_finite() && r > 0.0 => r,
        Some(r) => {
            return Err(invalid(format!(
                "the frame rate {r} Hz of {} is not a positive number: set input.frame_rate_hz in the workflow",
                input.uri
            )));
        }
        None => {
            warnings.push(format!(
                "{} does not say its frame rate; assuming 30 Hz (set input.frame_rate_hz in the workflow)",
                input.uri
            ));
            30.0
        }
    };
    let geometry = RecordingGeometry {
        shape,
        chunks: input.chunks,
        pixel_size_um: meta.pixel_size_um,
    };
    let budget = options
        .memory_budget
        .unwrap_or(w.resources.memory_per_task_bytes);
    let plan = plan(w, &geometry, options.memory_budget, options.tile_size).map_err(|source| {
        WorkflowError::Plan {
            file: file.to_string(),
            source,
        }
    })?;
    let keys = crate::task_keys(w, &plan, &input.digest);
    let base = options.output.trim_end_matches('/');
    let task_uri = |key: &str| format!("{base}/tasks/{key}");
    let morphology = w
        .stages
        .iter()
        .find(|s| s.uses == "detect")
        .and_then(|s| s.with.get("morphology").and_then(Value::as_str))
        .unwrap_or("soma")
        .to_string();
    let context = RunContext {
        radius_px: cell_radius_px(w, &geometry),
        frame_rate_hz: rate,
        morphology,
    };
    let offsets: Vec<usize> = plan
        .stages
        .iter()
        .scan(0, |acc, s| {
            let o = *acc;
            *acc += s.tiles.len();
            Some(o)
        })
        .collect();
    let produced_by = |si: usize, kind: DataKind| {
        (0..si)
            .rev()
            .find(|&j| kinds(w, &plan.stages[j].name).1.contains(&kind))
    };
    let pieces_of = |j: usize, array: Option<&str>| -> Vec<Piece> {
        plan.stages[j]
            .tiles
            .iter()
            .zip(&keys[j])
            .map(|(t, k)| Piece {
                core: t.core.clone(),
                uri: task_uri(k),
                array: array.map(str::to_string),
            })
            .collect()
    };
    let input_piece = Piece {
        core: shape.full_box(),
        uri: input.uri.clone(),
        array: Some(input.array.clone()),
    };
    let missing = |name: &str| invalid(format!("plan stage {name} has no workflow stage"));
    let mut specs: Vec<TaskSpec> = Vec::with_capacity(plan.task_count() + 1);
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(plan.task_count() + 1);
    let mut movie = MovieSource {
        shape,
        chunks: input.chunks,
        meta: meta.clone(),
        pieces: vec![input_piece.clone()],
    };
    for (si, sp) in plan.stages.iter().enumerate() {
        let (uses, stage) = stage_of(w, &sp.name).ok_or_else(|| missing(&sp.name))?;
        movie.pieces = produced_by(si, DataKind::Movie).map_or_else(
            || vec![input_piece.clone()],
            |j| pieces_of(j, Some("movie")),
        );
        let shifts =
            produced_by(si, DataKind::Shifts).map_or_else(Vec::new, |j| pieces_of(j, None));
        let srcs = sources(w, &plan, si);
        let mut src_uses = Vec::with_capacity(srcs.len());
        for &j in &srcs {
            let name = &plan.stages[j].name;
            src_uses.push(stage_of(w, name).ok_or_else(|| missing(name))?.0);
        }
        for (ti, tile) in sp.tiles.iter().enumerate() {
            let mut inputs = Vec::new();
            let mut d = BTreeSet::new();
            for (&j, su) in srcs.iter().zip(&src_uses) {
                for (t, k) in plan.stages[j].tiles.iter().zip(&keys[j]) {
                    if meets(&t.core, &tile.halo) {
                        inputs.push(TaskInput {
                            key: k.clone(),
                            uses: su.clone(),
                            tile: t.clone(),
                            uri: task_uri(k),
                            manifest: String::new(),
                        });
                        d.insert(offsets[j] + t.index);
                    }
                }
            }
            if si > 0 {
                d.extend(tile.depends_on.iter().map(|&p| offsets[si - 1] + p));
            }
            specs.push(TaskSpec {
                key: keys[si][ti].clone(),
                stage: sp.name.clone(),
                uses: uses.clone(),
                params: stage
                    .with
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                tile: tile.clone(),
                bin_frames: sp.bin_frames,
                movie: movie.clone(),
                shifts: shifts.clone(),
                inputs,
                context: context.clone(),
                memory_budget_bytes: budget,
                output: task_uri(&keys[si][ti]),
                run: None,
            });
            deps.push(d.into_iter().collect());
        }
    }

    // The publish task: waits for every task, copies what they publish into the run's output,
    // writes the run's records and marks the output complete.
    let normalized = w.normalized();
    let workflow_sha256 = crate::keys::sha256_hex(normalized.to_string().as_bytes());
    let all_keys: Vec<&str> = specs.iter().map(|s| s.key.as_str()).collect();
    let key = hex_digest(&[
        "tessera-publish/1",
        &workflow_sha256,
        &input.digest,
        &all_keys.join(" "),
    ]);
    let stages: Vec<Value> = plan
        .stages
        .iter()
        .map(|s| json!({"name": s.name, "tiling": s.kind, "tasks": s.tiles.len(), "bin_frames": s.bin_frames}))
        .collect();
    let mut params = serde_json::Map::new();
    params.insert("workflow".into(), normalized);
    params.insert("workflow_sha256".into(), json!(workflow_sha256));
    params.insert("input".into(), input.described.clone());
    params.insert("input_uri".into(), json!(input.uri));
    params.insert("input_array".into(), json!(input.array));
    params.insert("input_digest".into(), json!(input.digest));
    params.insert("stages".into(), json!(stages));
    params.insert("memory_per_task_bytes".into(), json!(budget));
    let whole = shape.full_box();
    let publish = TaskSpec {
        key,
        stage: PUBLISH.into(),
        uses: PUBLISH.into(),
        params,
        tile: Tile {
            index: 0,
            core: whole.clone(),
            halo: whole,
            memory_bytes: 0,
            depends_on: Vec::new(),
        },
        bin_frames: 1,
        movie: MovieSource {
            pieces: Vec::new(),
            ..movie
        },
        shifts: Vec::new(),
        inputs: specs
            .iter()
            .map(|s| TaskInput {
                key: s.key.clone(),
                uses: s.uses.clone(),
                tile: s.tile.clone(),
                uri: s.output.clone(),
                manifest: String::new(),
            })
            .collect(),
        context,
        memory_budget_bytes: budget,
        output: base.to_string(),
        run: None,
    };
    deps.push((0..specs.len()).collect());
    specs.push(publish);
    Ok(RunTasks {
        plan,
        specs,
        deps,
        warnings,
    })
}
