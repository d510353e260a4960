//! `tessera run WORKFLOW --input URI --output URI [--workers N]`: the embedded coordinator. It
//! validates the workflow, plans its tiles on the recording, and runs every task on N worker
//! threads in this process, driven by the coordinator's scheduling state machine
//! (`tessera_coordinator::step`) exactly as a remote coordinator drives remote workers: grants
//! with fencing tokens, reports, retries of retryable failures with backoff, quarantine of
//! failing tasks.
//!
//! Output (written in place, marked `incomplete` until the end):
//! ```text
//! <out>/tasks/<key>/          each task's committed output (the registered or denoised movie's
//!                             pieces, the tiles' components, ...) with its own provenance record
//! <out>/rois/, <out>/summary/ the results, copied from the tasks that publish them (the last task
//!                             publishing a path wins: QC's acceptance over the merge's)
//! <out>/run/workflow.json     the normalized workflow (every default explicit)
//! <out>/run/tasks.jsonl       every task's provenance record, one JSON object per line
//! <out>/provenance/, <out>/ro-crate-metadata.json   the run's record, manifest and RO-Crate
//! ```
//! Task outputs are named by their content key, so a run that was interrupted or failed is resumed
//! by the same command: committed tasks are found and kept, the rest run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tessera_coordinator::{Action, Event, Outcome, Policy, RunStatus, StateStore};
use tessera_io::{Location, Output, Store};
use tessera_worker::{MovieSource, Piece, RunContext, TaskInput, TaskResult, TaskSpec, WorkerInfo};
use tessera_workflow::keys::{kinds, meets, sources, stage_of};
use tessera_workflow::{DataKind, RecordingGeometry, cell_radius_px};

use crate::provenance::{Started, describe_input, record_with, tool};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow YAML file.
    pub workflow: PathBuf,
    #[command(flatten)]
    pub on: crate::workflow::PlanOptions,
    /// Where the run writes (path or URI) instead of the workflow's outputs.uri.
    #[arg(long)]
    pub output: Option<String>,
    /// Worker threads running tasks at once (each task also runs data-parallel inside).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Replace a finished output at the same location (an unfinished one is always resumed).
    #[arg(long)]
    pub overwrite: bool,
    /// The scheduling state database (SQLite; default: <output>/run/state.db for a filesystem
    /// output, in memory for an object store).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Testing: start each task after a pseudo-random pause drawn from this seed, so tasks
    /// complete in another order.
    #[arg(long, hide = true)]
    pub shuffle_seed: Option<u64>,
}

/// A pause of 0-60 ms for `task` (SplitMix64 of seed and task).
fn pause(seed: u64, task: usize) -> Duration {
    let mut z = seed ^ (task as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Duration::from_millis((z ^ (z >> 31)) % 60)
}

/// A path or URI made absolute (a filesystem path), so records name it from anywhere.
fn absolute(uri: &str) -> anyhow::Result<String> {
    Ok(match Location::parse(uri)? {
        Location::File(p) => std::path::absolute(&p).unwrap_or(p).display().to_string(),
        _ => uri.trim_end_matches('/').to_string(),
    })
}

type Reply = (
    usize,
    usize,
    u64,
    Result<TaskResult, tessera_worker::WorkerError>,
);

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = Started::now();
    let started = Instant::now();
    let w = tessera_workflow::load(&args.workflow)?;
    let (uri, rec) = args.on.open(&w, &args.workflow)?;
    let out_uri = args
        .output
        .clone()
        .or_else(|| w.outputs.uri.clone())
        .with_context(|| {
            format!(
                "no output location: give --output URI or set outputs.uri in {}",
                args.workflow.display()
            )
        })?;
    crate::transform::refuse_overlap(&uri, &out_uri)?;
    let shape = rec.shape();
    let mut meta = rec.meta().clone();
    if let Some(r) = w.input.frame_rate_hz {
        meta.frame_rate_hz = Some(r);
    }
    if let Some(p) = w.input.pixel_size_um {
        meta.pixel_size_um = Some(p);
    }
    let rate = match meta.frame_rate_hz {
        Some(r) if r.is_finite() && r > 0.0 => r,
        Some(r) => bail!(
            "the frame rate {r} Hz of {uri} is not a positive number: set input.frame_rate_hz in the workflow"
        ),
        None => {
            eprintln!(
                "warning: {uri} does not say its frame rate; assuming 30 Hz (set input.frame_rate_hz in the workflow)"
            );
            30.0
        }
    };
    let geometry = RecordingGeometry {
        shape,
        chunks: rec.chunks(),
        pixel_size_um: meta.pixel_size_um,
    };
    let budget = args
        .on
        .memory_budget
        .unwrap_or(w.resources.memory_per_task_bytes);
    let plan = tessera_workflow::plan(&w, &geometry, args.on.memory_budget, args.on.tile_size)
        .with_context(|| format!("cannot plan {} on {uri}", args.workflow.display()))?;
    let radius = cell_radius_px(&w, &geometry);
    // Task keys name the recording by its content: the manifest of every stored object.
    let (input_described, manifest) = describe_input(&uri)?;
    let digest = match &manifest {
        Some(m) => m.digest(),
        None => crate::workflow::input_digest(&rec),
    };
    let keys = tessera_workflow::task_keys(&w, &plan, &digest);
    let overwrite = args.overwrite || w.outputs.overwrite;
    let (output, resumed) = Output::resume(&out_uri, overwrite)?;
    let base = absolute(&out_uri)?;
    let task_uri = |key: &str| format!("{base}/tasks/{key}");

    // One specification per task, in plan order (stage by stage, tile by tile).
    let morphology = w
        .stages
        .iter()
        .find(|s| s.uses == "detect")
        .and_then(|s| s.with.get("morphology").and_then(Value::as_str))
        .unwrap_or("soma")
        .to_string();
    let context = RunContext {
        radius_px: radius,
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
            .find(|&j| kinds(&w, &plan.stages[j].name).1.contains(&kind))
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
        uri: uri.clone(),
        array: Some(rec.array_path().to_string()),
    };
    let mut specs: Vec<TaskSpec> = Vec::with_capacity(plan.task_count());
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(plan.task_count());
    for (si, sp) in plan.stages.iter().enumerate() {
        let (uses, stage) = stage_of(&w, &sp.name)
            .with_context(|| format!("plan stage {} has no workflow stage", sp.name))?;
        let movie = MovieSource {
            shape,
            chunks: rec.chunks(),
            meta: meta.clone(),
            pieces: produced_by(si, DataKind::Movie).map_or_else(
                || vec![input_piece.clone()],
                |j| pieces_of(j, Some("movie")),
            ),
        };
        let shifts =
            produced_by(si, DataKind::Shifts).map_or_else(Vec::new, |j| pieces_of(j, None));
        let srcs = sources(&w, &plan, si);
        for (ti, tile) in sp.tiles.iter().enumerate() {
            let mut inputs = Vec::new();
            let mut d = BTreeSet::new();
            for &j in &srcs {
                let (src_uses, _) = stage_of(&w, &plan.stages[j].name).with_context(|| {
                    format!("plan stage {} has no workflow stage", plan.stages[j].name)
                })?;
                for (t, k) in plan.stages[j].tiles.iter().zip(&keys[j]) {
                    if meets(&t.core, &tile.halo) {
                        inputs.push(TaskInput {
                            key: k.clone(),
                            uses: src_uses.clone(),
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
            });
            deps.push(d.into_iter().collect());
        }
    }

    let policy = Policy {
        // In-process workers are not lost silently: a lease lasts as long as its task.
        lease_ttl: u64::MAX / 4,
        max_attempts: w.resources.retries + 1,
        backoff_base: 200,
        backoff_max: 10_000,
        allow_missing: false,
    };
    // The scheduling state, every event logged before it is applied (`sqlite3 <out>/run/state.db
    // 'select * from events'` shows the run's history; a resumed run adds an attempt).
    let state_path = match (&args.state, Location::parse(&out_uri)?) {
        (Some(p), _) => p.clone(),
        (None, Location::File(p)) => {
            let dir = p.join("run");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.join("state.db")
        }
        (None, _) => PathBuf::from(":memory:"),
    };
    let mut store = StateStore::open(&state_path)?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let run_id = format!("run-{created_ms}");
    let mut state = store.create_run(
        &run_id,
        w.metadata.name.as_deref().unwrap_or("workflow"),
        created_ms,
        specs
            .iter()
            .zip(&deps)
            .map(|(s, d)| (s.key.clone(), d.clone()))
            .collect(),
        policy,
        &json!({"input": uri, "input_digest": digest, "output": out_uri,
                "workflow": w.normalized()}),
    )?;
    let total = specs.len();
    let index_of: std::collections::HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let mut recovered = 0usize;
    if resumed {
        for (i, spec) in specs.iter().enumerate() {
            if let Some(manifest) = tessera_worker::committed(&spec.output) {
                let acts = store.apply(&mut state, Event::Recovered { task: i, manifest })?;
                recovered += acts
                    .iter()
                    .filter(|a| matches!(a, Action::Committed { .. }))
                    .count();
            }
        }
        eprintln!("resuming {out_uri}: {recovered} of {total} tasks already committed");
    }

    // The workers: threads that run whatever they are granted and report back.
    let workers = args.workers as usize;
    let host = tessera_io::provenance::hostname();
    let name = |i: usize| format!("{host}/embedded-{i}");
    let (reply_tx, reply_rx) = mpsc::channel::<Reply>();
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::channel::<(usize, u64, Box<TaskSpec>)>();
        senders.push(tx);
        let reply = reply_tx.clone();
        let info = WorkerInfo {
            id: name(i),
            tool: tool(),
        };
        let shuffle = args.shuffle_seed;
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    for (task, token, spec) in rx {
                        if let Some(seed) = shuffle {
                            std::thread::sleep(pause(seed, task));
                        }
                        let _span = tracing::info_span!("task", key = %spec.key, stage = %spec.stage, tile = spec.tile.index).entered();
                        // A panic (a bug, never the data's fault by design) fails the task, not
                        // the run's bookkeeping.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            tessera_worker::execute(&spec, &info)
                        }))
                        .unwrap_or_else(|p| {
                            let what = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Err(tessera_worker::WorkerError::Internal(format!(
                                "panicked: {what}"
                            )))
                        });
                        if reply.send((i, task, token, result)).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a worker thread")?,
        );
    }
    drop(reply_tx);

    let bar = crate::progress::tasks(total as u64, "run");
    bar.set_position(recovered as u64);
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    let mut idle: VecDeque<usize> = (0..workers).collect();
    let mut records: BTreeMap<usize, Value> = BTreeMap::new();
    let mut executed = 0usize;
    let mut retries = 0usize;
    // Idle workers poll when something changed: a report came in, or a retry's backoff is over
    // (in-process workers are never lost, so nothing else can make a task grantable).
    let mut changed = true;
    let mut backoff_until: Option<u64> = None;
    while state.state.status == RunStatus::Running {
        while changed && let Some(&wi) = idle.front() {
            let acts = store.apply(
                &mut state,
                Event::Poll {
                    worker: name(wi),
                    slots: 1,
                    now: now(),
                },
            )?;
            let mut granted = false;
            for a in acts {
                if let Action::Grant { task, token, .. } = a {
                    let mut spec = specs[task].clone();
                    for input in &mut spec.inputs {
                        if let Some(&i) = index_of.get(input.key.as_str())
                            && let tessera_coordinator::TaskState::Committed { manifest } =
                                &state.state.tasks[i].state
                        {
                            input.manifest = manifest.clone();
                        }
                    }
                    senders[wi]
                        .send((task, token, Box::new(spec)))
                        .context("a worker thread ended")?;
                    granted = true;
                }
            }
            if !granted {
                break;
            }
            idle.pop_front();
        }
        changed = false;
        match reply_rx.recv_timeout(Duration::from_millis(200)) {
            Ok((wi, task, token, result)) => {
                idle.push_back(wi);
                changed = true;
                let what = format!(
                    "task {} ({} tile {})",
                    &specs[task].key[..12],
                    specs[task].stage,
                    specs[task].tile.index
                );
                let outcome = match result {
                    Ok(r) => {
                        records.insert(task, r.record);
                        executed += 1;
                        Outcome::Done {
                            manifest: r.manifest,
                        }
                    }
                    Err(e) if e.is_retryable() => Outcome::Retryable {
                        error: format!("{what}: {e}"),
                    },
                    Err(e) => Outcome::Fatal {
                        error: format!("{what}: {e}"),
                    },
                };
                for a in store.apply(
                    &mut state,
                    Event::Report {
                        worker: name(wi),
                        task,
                        token,
                        outcome,
                        now: now(),
                    },
                )? {
                    match a {
                        Action::Committed { .. } => bar.inc(1),
                        Action::Retry {
                            error, not_before, ..
                        } => {
                            backoff_until =
                                Some(backoff_until.map_or(not_before, |b| b.max(not_before)));
                            retries += 1;
                            bar.suspend(|| eprintln!("retrying after: {error}"));
                        }
                        _ => {}
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if backoff_until.is_some_and(|t| now() >= t) {
                    backoff_until = None;
                    changed = true;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every worker thread ended"),
        }
    }
    bar.finish_and_clear();
    // Busy workers finish their task (its output is committed or discarded whole), then stop.
    drop(senders);
    for h in handles {
        let _ = h.join();
    }
    drop(store);
    let state = state.state;
    match &state.status {
        RunStatus::Succeeded => {}
        RunStatus::Failed { error, .. } => bail!(
            "the run failed: {error}\n{out_uri} is left marked incomplete with {} committed task(s); run the same command again to resume",
            state
                .tasks
                .iter()
                .filter(|t| matches!(t.state, tessera_coordinator::TaskState::Committed { .. }))
                .count()
        ),
        other => bail!("the run ended {other:?}"),
    }

    // Publish: copy each published path from the last task that publishes it.
    let stores: Vec<Store> = specs
        .iter()
        .map(|s| Ok(Store::open(&Location::parse(&s.output)?)?))
        .collect::<anyhow::Result<_>>()?;
    let mut publisher: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in stores.iter().enumerate() {
        let attrs = s.attributes("")?.unwrap_or_default();
        for p in attrs
            .get("tessera")
            .and_then(|t| t.get("publishes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            publisher.insert(p.to_string(), i);
        }
    }
    let groups: BTreeSet<&str> = publisher
        .keys()
        .filter_map(|p| p.split_once('/').map(|(g, _)| g))
        .collect();
    for g in groups {
        output.write_group_at(g, serde_json::Map::new())?;
    }
    for (path, &i) in &publisher {
        output.store().copy_from(&stores[i], path)?;
    }
    let mut lines = String::new();
    for (i, s) in stores.iter().enumerate() {
        let record = match records.remove(&i) {
            Some(r) => r,
            None => serde_json::from_slice(
                &s.get("provenance/record.json")?
                    .with_context(|| format!("{}: no provenance record", specs[i].output))?,
            )?,
        };
        lines.push_str(&serde_json::to_string(&record)?);
        lines.push('\n');
    }
    output.write_group_at("run", serde_json::Map::new())?;
    output.write_file("run/tasks.jsonl", lines.into_bytes())?;
    let normalized = w.normalized();
    let workflow_json = serde_json::to_vec_pretty(&normalized)?;
    let workflow_sha256 = tessera_io::manifest::sha256_hex(&serde_json::to_vec(&normalized)?);
    output.write_file("run/workflow.json", workflow_json)?;
    let stages: Vec<Value> = plan
        .stages
        .iter()
        .map(|s| json!({"name": s.name, "tiling": s.kind, "tasks": s.tiles.len(), "bin_frames": s.bin_frames}))
        .collect();
    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "run", "workflow": w.metadata.name, "workflow_sha256": workflow_sha256,
               "input": uri, "input_digest": digest, "stages": stages, "tasks": total}),
    );
    output.write_group(root)?;
    let mut record = record_with("run", began, vec![input_described]);
    if let Some(obj) = record.as_object_mut() {
        obj.insert("workflow".into(), normalized);
        obj.insert("workflow_sha256".into(), json!(workflow_sha256));
        obj.insert(
            "run".into(),
            json!({"workers": workers, "tasks": total, "executed": executed,
                   "recovered": recovered, "retries": retries, "stages": stages, "input_digest": digest,
                   "task_records": "run/tasks.jsonl", "memory_per_task_bytes": budget}),
        );
        obj.insert(
            "ro_crate".into(),
            json!({"workflow": "run/workflow.json", "parts": [
                {"@id": "run/workflow.json", "@type": "File", "encodingFormat": "application/json",
                 "name": w.metadata.name.clone().unwrap_or_else(|| "workflow".into()),
                 "description": "the normalized workflow: every default explicit"},
                {"@id": "run/tasks.jsonl", "@type": "File", "encodingFormat": "application/jsonl",
                 "name": "provenance record of every task"},
                {"@id": "rois/", "@type": "Dataset", "name": "ROIs, traces, spikes and QC"},
                {"@id": "tasks/", "@type": "Dataset", "name": "every task's output, by content key"},
            ]}),
        );
    }
    output.set_provenance(record)?;
    let location = output.finish()?;
    let accepted = Store::open(&location)?
        .read_array::<u8>("rois/accepted")
        .map(|a| {
            let n = a.len();
            format!(
                ": {} components, {} accepted",
                n,
                a.iter().filter(|&&v| v == 1).count()
            )
        })
        .unwrap_or_default();
    println!(
        "ran {} ({}) on {uri}: {total} tasks ({executed} run, {recovered} resumed) on {workers} worker(s) in {:.1} s -> {location}{accepted}",
        args.workflow.display(),
        w.chain(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
