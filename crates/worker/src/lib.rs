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
//! | `publish` | whole | every task's output | the run's `rois/`, `summary/`, `run/` records, and its own record; marks the run complete |
//!
//! A task's root attributes list what it `publishes`: the paths the publish task copies into the
//! run's output (the last task in plan order publishing a path wins).
//!
//! [`client`] is the worker process's loop around [`execute`]: poll the coordinator over gRPC,
//! run, extend leases, report.

pub mod client;
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
use tessera_io::{Location, Output, Store};

pub use components::{read_background, read_components, write_background, write_components};
pub use error::WorkerError;
pub use movie::{MovieFrames, MovieReader};
pub use stages::extract::{default_bin_frames, write_spike_outputs};
pub use stages::register::{template_sample, write_registration};
pub use stages::reserve_bytes;
pub use tessera_core::task::{MovieSource, Piece, RunContext, TaskInput, TaskSpec};

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
    /// The output was already committed (an earlier attempt or run with the same key wrote it):
    /// nothing was computed.
    pub reused: bool,
}

/// What a stage's task did: figures for the record, and the paths it publishes.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub figures: Value,
    pub publishes: Vec<&'static str>,
}

/// Runs `spec` and commits its output: every array first, the provenance record and manifest last.
/// Errors say whether a retry could help ([`WorkerError::is_retryable`]).
///
/// A task whose output is already committed (found by its content key: an earlier run into the
/// same output, or an attempt whose report was lost) is not computed again: its committed
/// result is returned, marked `reused`.
pub fn execute(spec: &TaskSpec, worker: &WorkerInfo) -> Result<TaskResult, WorkerError> {
    if let Some(done) = committed_result(&spec.output, true) {
        return Ok(done);
    }
    if spec.uses == tessera_core::task::PUBLISH {
        return stages::publish::run(spec, worker);
    }
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
    committed_result(&location.to_string(), false)
        .ok_or_else(|| WorkerError::Spec(format!("{location}: no provenance record after commit")))
}

/// The committed output at `uri` (complete, with its record), if there is one.
pub(crate) fn committed_result(uri: &str, reused: bool) -> Option<TaskResult> {
    let loc = Location::parse(uri).ok()?;
    let store = Store::open(&loc).ok()?;
    store.check_complete().ok()?;
    let record: Value = serde_json::from_slice(&store.get("provenance/record.json").ok()??).ok()?;
    let manifest = record["outputs"]["manifest_sha256"].as_str()?.to_string();
    Some(TaskResult {
        manifest,
        record,
        reused,
    })
}
