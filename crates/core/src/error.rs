use thiserror::Error;

/// Errors raised by core types when a value breaks an invariant.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    /// A box does not fit inside the recording or is empty.
    #[error("box {requested} is outside recording of shape {shape} or empty")]
    BoxOutOfBounds { requested: String, shape: String },
    /// A shape has a zero extent.
    #[error("shape {0} has a zero-length dimension")]
    EmptyShape(String),
    /// A data type name that tessera cannot process.
    #[error(
        "unsupported dtype '{0}' (expected one of uint8, uint16, uint32, uint64, int8, int16, int32, int64, float32, float64)"
    )]
    UnsupportedDtype(String),
    /// Ground-truth regions that do not parse as neurofinder JSON.
    #[error("invalid regions JSON: {0}")]
    InvalidRegions(String),
    /// A tile plan that cannot be made (budget too small, parameter out of range).
    #[error("cannot plan the tiles of stage '{stage}': {reason}")]
    Plan { stage: String, reason: String },
}
