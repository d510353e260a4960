use std::path::PathBuf;

use thiserror::Error;

/// Errors of tessera's storage layer. Every variant names the object it is about.
#[derive(Debug, Error)]
pub enum IoError {
    #[error("invalid location '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("cannot open store {location}: {reason}")]
    Store { location: String, reason: String },
    #[error(
        "{location}: nothing found at '{path}' (no Zarr v2 or v3 metadata: not a Zarr store, or a wrong array path)"
    )]
    NotZarr { location: String, path: String },
    #[error("{location}: '{path}' is a Zarr group, not an array{hint}")]
    IsGroup {
        location: String,
        path: String,
        hint: String,
    },
    #[error("{location}: array '{path}' has {ndim} dimensions; a recording needs 3 (t, y, x)")]
    NotThreeD {
        location: String,
        path: String,
        ndim: usize,
    },
    #[error(
        "{location}: array '{path}' has unsupported data type {dtype} (expected an integer or float type: uint8..uint64, int8..int64, float32, float64)"
    )]
    UnsupportedDtype {
        location: String,
        path: String,
        dtype: String,
    },
    #[error(
        "{location}: array '{path}' is incomplete (status '{status}'): a write was interrupted; write it again with --overwrite"
    )]
    Incomplete {
        location: String,
        path: String,
        status: String,
    },
    #[error("{location}: cannot read chunk {chunk:?} (key '{key}') of array '{path}': {reason}")]
    Chunk {
        location: String,
        path: String,
        chunk: Vec<u64>,
        key: String,
        reason: String,
    },
    #[error("{location}: cannot read {what} of array '{path}': {reason}")]
    Read {
        location: String,
        path: String,
        what: String,
        reason: String,
    },
    #[error("{location}: cannot write {what}: {reason}")]
    Write {
        location: String,
        what: String,
        reason: String,
    },
    #[error("output {0} already exists (pass --overwrite to replace it)")]
    Exists(String),
    #[error("{location} is read-only (HTTP): write to a path, memory://, s3:// or gs:// location")]
    ReadOnly { location: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] tessera_core::CoreError),
    #[error("{path}: {reason}")]
    Tiff { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}
