//! What a task of a run is, as data: everything a worker needs to run one tile of one stage
//! ([`TaskSpec`]), built by the planner (the workflow crate) and carried by the coordinator to the
//! worker as JSON. The coordinator treats it as opaque; the worker never sees the workflow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tiling::Tile;
use crate::{Box3, RecordingMeta, Shape3};

/// The plan stage (and `uses`) of a run's last task, which publishes its results: it copies
/// what the tasks publish into the run's output, writes the run's records and marks it complete.
pub const PUBLISH: &str = "publish";

/// Part of a movie: the box `core` of the whole movie, stored as the recording at `uri` (array
/// `array`), whose own frame and pixel 0 are the box's first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub core: Box3,
    pub uri: String,
    pub array: Option<String>,
}

/// A movie made of pieces whose cores partition it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovieSource {
    pub shape: Shape3,
    /// Storage chunk shape of the recording (reads are aligned to its frames).
    pub chunks: [u64; 3],
    pub meta: RecordingMeta,
    pub pieces: Vec<Piece>,
}

/// The output of an earlier task that this one reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    pub key: String,
    /// The stage it ran (`detect`, `demix/merge`, ...).
    pub uses: String,
    pub tile: Tile,
    pub uri: String,
    /// Digest of its committed manifest (filled in when the task is granted: the coordinator
    /// knows what each dependency committed).
    pub manifest: String,
}

/// Facts of the run every task may need, resolved once when the run is planned.
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
    /// Its plan stage (the workflow stage id, `<id>/merge`, or `publish`).
    pub stage: String,
    /// The catalogue stage it runs (or `<uses>/merge`, or `publish`).
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
    /// Facts about the run known only when the task is granted (the publish task's statistics:
    /// attempts, retries, reused tasks). Not part of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Value>,
}

/// What the planner needs to know of the recording (read by whoever submits the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingInput {
    /// Its location, absolute.
    pub uri: String,
    /// The movie array's path inside it.
    pub array: String,
    pub shape: Shape3,
    pub chunks: [u64; 3],
    pub meta: RecordingMeta,
    /// Content digest (the manifest of every stored object): task keys start from it.
    pub digest: String,
    /// How the run's record names it (location, manifest).
    pub described: Value,
}
