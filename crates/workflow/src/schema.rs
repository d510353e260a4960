//! The validated workflow: every default filled in, so that the normalized form (its JSON) says
//! exactly how a run is made and hashes the same whatever the YAML's layout.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The only schema version this build reads.
pub const API_VERSION: &str = "tessera/v1";

/// The `kind` of a workflow document.
pub const KIND: &str = "Workflow";

/// A validated workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub input: Input,
    pub stages: Vec<Stage>,
    pub outputs: Outputs,
    pub resources: Resources,
}

/// Free-form description of the workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metadata {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// The recording to process. Any field may instead be given on the command line (`--input`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Input {
    pub uri: Option<String>,
    /// Array path inside the store (default: the recording's own choice).
    pub array: Option<String>,
    /// Overrides the recording's frame rate (Hz).
    pub frame_rate_hz: Option<f64>,
    /// Overrides the recording's pixel size (micrometres).
    pub pixel_size_um: Option<f64>,
}

/// One stage of the workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Unique name within the workflow (default: the stage's name).
    pub id: String,
    /// The catalogue stage it runs.
    pub uses: String,
    /// Every parameter of the stage, defaults filled in (`null`: auto).
    pub with: BTreeMap<String, Value>,
    pub tile: TileSettings,
}

/// Per-stage overrides of the tile planner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TileSettings {
    /// Core edge of spatial and spatiotemporal tiles, in pixels.
    pub size_px: Option<u64>,
    /// Frames per task of temporal and spatiotemporal tiles.
    pub frames: Option<u64>,
    /// Halo of spatial and spatiotemporal tiles, in pixels (default: twice the cell radius).
    pub halo_px: Option<u64>,
}

/// Where results go.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outputs {
    pub uri: Option<String>,
    pub overwrite: bool,
    /// An NWB file the publish task writes beside the results. Left out of the normalized form
    /// when absent, so workflows without it hash as they did before it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nwb: Option<NwbOutput>,
}

/// `outputs.nwb`: the run's results as an NWB file at `file` (a name relative to the output's
/// root), with the session's metadata (the fields of `tessera export nwb`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NwbOutput {
    pub file: String,
    #[serde(flatten)]
    pub session: tessera_core::session::Session,
}

/// The NWB file's default name.
pub const DEFAULT_NWB_FILE: &str = "session.nwb";

/// What each task may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Memory one task may use, in bytes (the tile planner sizes tiles to it).
    pub memory_per_task_bytes: u64,
    /// Attempts after the first for a task that failed for a retryable reason.
    pub retries: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_per_task_bytes: 2 << 30,
            retries: 3,
        }
    }
}

impl Workflow {
    /// The normalized workflow as JSON: defaults explicit, keys sorted at every level (whether or
    /// not serde_json preserves insertion order in this build), so equal workflows print and hash
    /// the same.
    pub fn normalized(&self) -> Value {
        canonical(serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// The stage ids in order, joined by arrows.
    pub fn chain(&self) -> String {
        self.stages
            .iter()
            .map(|s| {
                if s.id == s.uses {
                    s.id.clone()
                } else {
                    format!("{} ({})", s.id, s.uses)
                }
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// `v` with the keys of every object in sorted order.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}
