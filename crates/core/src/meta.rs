use serde::{Deserialize, Serialize};

/// The attribute key under which tessera stores [`RecordingMeta`] on a recording's array.
pub const META_ATTRIBUTE: &str = "tessera";

/// What is known about how a recording was acquired. Every field is optional: tessera records what
/// it was given or found, and never invents a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingMeta {
    /// Frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate_hz: Option<f64>,
    /// Edge length of one pixel in micrometres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_size_um: Option<f64>,
    /// Indicator name (e.g. `GCaMP6s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
    /// Where the pixels came from (a TIFF path, `tessera simulate --preset base`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free-form acquisition metadata found in the source (e.g. ScanImage header values).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub acquisition: serde_json::Map<String, serde_json::Value>,
}
