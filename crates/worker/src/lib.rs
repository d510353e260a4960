//! tessera's worker: runs one task of a workflow, given everything it needs in a [`TaskSpec`] (the
//! stage, its parameters as JSON with every default filled in, its tile, the movie it reads and
//! the outputs of the tasks whose data it reads). It never parses YAML and keeps no state between
//! tasks; the coordinator decides what runs where.
//!
//! Each task writes one output at [`TaskSpec::output`] (staged and swapped in whole by
//! `tessera_io::Output`, so a task that fails or is killed leaves nothing that looks committed)
//! with its provenance record, and its manifest is computed last: its digest is what the worker
//! reports, and what the next tasks' records name as their input.
//!
//! What each stage's task does (the catalogue's stages; tiles from the planner):
//!
//! | stage | tiles | reads | writes |
//! |---|---|---|---|
//! | `register`, `register-piecewise` | runs of frames | its frames; a template sample spread over the movie | its frames, registered (float32), and `registration/` shifts |
//! | `denoise` | blocks of frames x pixels | its block with the halo | its core, denoised |
//! | `summarize` | whole | the movie in runs of frames | `summary/` images |
//! | `detect` | spatial | its halo box (binned when planned) | candidate components and the core's detection images |
//! | `demix` | spatial | its halo box; the candidates of the detect tiles it meets | demixed components it owns (centroid in its core) |
//! | `demix/merge` | whole | every demix tile; the movie in runs of frames | merged components with refit traces and background; stitched images |
//! | `qc` | whole | the merge; the movie in runs of frames | acceptance, `qc.json`, regions |
//! | `deconvolve` | whole | the merge | spikes, denoised calcium, dF/F |
//!
//! A task's root attributes list what it `publishes`: the paths a run copies into its final
//! output (the last task publishing a path wins).

mod components;
mod error;
mod movie;
mod stages;

/// Suffix of the merge task of a spatially tiled ROI stage (the workflow crate names its plan
/// stage `<id>/merge` and its `uses` `<uses>/merge`).
pub const MERGE_SUFFIX: &str = "/merge";

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tessera_core::tiling::Tile;
use tessera_io::{Location, Output, Store};

pub use components::{read_background, read_components, write_background, write_components};
pub use error::WorkerError;
pub use movie::{MovieFrames, MovieReader, MovieSource, Piece};
pub use stages::extract::{default_bin_frames, write_spike_outputs};
pub use stages::register::{template_sample, write_registration};
pub use stages::reserve_bytes;

/// The output of an earlier task that this one reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    pub key: String,
    /// The stage it ran (`detect`, `demix/merge`, ...).
    pub uses: String,
    pub tile: Tile,
    pub uri: String,
    /// Digest of its committed manifest.
    pub manifest: String,
}

/// Facts of the run every task may need, resolved once by the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// Expected cell radius in pixels (the detect stage's, else 6 um over the pixel size, else 5).
    pub radius_px: f64,
    /// Frame rate in Hz (the workflow's, else the recording's, else 30).
    pub frame_rate_hz: f64,
    /// Shape prior of the detect stage: `soma` or `any`.
    pub morphology: String,
}

/// Everything a task needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Content key (hash of stage, parameters, input digest, tile and the keys it reads).
    pub key: String,
    /// Its plan stage (the workflow stage id, or `<id>/merge`).
    pub stage: String,
    /// The catalogue stage it runs (or `<uses>/merge`).
    pub uses: String,
    /// The stage's parameters, every default filled in (`null`: auto).
    pub params: Map<String, Value>,
    pub tile: Tile,
    /// Frames averaged into one for this stage's working movie (spatial tiles).
    pub bin_frames: u64,
    /// The movie the stage reads (the recording, or the pieces of the last stage that changed it).
    pub movie: MovieSource,
    /// Pieces holding `registration/shifts` of the movie's frames, in frame order, when it was
    /// registered (detection seeds only where the field stayed in view).
    pub shifts: Vec<Piece>,
    /// Outputs of the tasks whose data it reads.
    pub inputs: Vec<TaskInput>,
    pub context: RunContext,
    /// Memory the task may use (runs of frames are sized to it).
    pub memory_budget_bytes: u64,
    /// Where its output goes.
    pub output: String,
}

/// Who runs the task, for its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// Tool name, version and git commit.
    pub tool: Value,
}

/// A committed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Digest of the output's manifest (what the worker reports).
    pub manifest: String,
    /// The task's provenance record, as written to its `provenance/record.json`.
    pub record: Value,
}

/// What a stage's task did: figures for the record, and the paths it publishes.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub figures: Value,
    pub publishes: Vec<&'static str>,
}

/// Runs `spec` and commits its output: every array first, the provenance record and manifest last.
/// Errors say whether a retry could help ([`WorkerError::is_retryable`]).
pub fn execute(spec: &TaskSpec, worker: &WorkerInfo) -> Result<TaskResult, WorkerError> {
    let started = SystemTime::now();
    let out = Output::create(&spec.output, true)?;
    let done = stages::run(spec, &out)?;
    let mut root = Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "task", "key": spec.key, "stage": spec.stage, "uses": spec.uses,
               "publishes": done.publishes}),
    );
    out.write_group(root)?;
    let finished = SystemTime::now();
    let record = json!({
        "tool": worker.tool,
        "command_name": "task",
        "task": {"key": spec.key, "stage": spec.stage, "uses": spec.uses,
                 "params": spec.params, "tile": spec.tile, "bin_frames": spec.bin_frames,
                 "context": spec.context},
        "worker": worker.id,
        "host": tessera_io::provenance::hostname(),
        "scheduler": tessera_io::provenance::scheduler_ids(),
        "started_at": tessera_io::provenance::rfc3339(started),
        "finished_at": tessera_io::provenance::rfc3339(finished),
        "wall_s": finished.duration_since(started).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "peak_rss_bytes": tessera_io::provenance::peak_rss_bytes(),
        "inputs": spec.inputs.iter().map(|i| json!({"uri": i.uri, "task": i.key,
            "manifest_sha256": i.manifest, "manifest": null})).chain(
            spec.movie.pieces.iter().filter(|p| !spec.inputs.iter().any(|i| i.uri == p.uri))
                .map(|p| json!({"uri": p.uri, "manifest": null}))).collect::<Vec<_>>(),
        "figures": done.figures,
    });
    out.set_provenance(record)?;
    let location = out.finish()?;
    // The committed record, with the manifest's digest finish added.
    let store = Store::open(&location)?;
    let record: Value = store
        .get("provenance/record.json")?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            WorkerError::Spec(format!("{location}: no provenance record after commit"))
        })?;
    let manifest = record["outputs"]["manifest_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(TaskResult { manifest, record })
}

/// Whether the task output at `uri` is committed (complete, with its record), and its manifest
/// digest: a rerun finds committed tasks by key and does not compute them again.
pub fn committed(uri: &str) -> Option<String> {
    let loc = Location::parse(uri).ok()?;
    let store = Store::open(&loc).ok()?;
    store.check_complete().ok()?;
    let record: Value = serde_json::from_slice(&store.get("provenance/record.json").ok()??).ok()?;
    record["outputs"]["manifest_sha256"]
        .as_str()
        .map(str::to_string)
}
