//! tessera-io: recordings in and out.
//!
//! - [`Location`] parses where data lives (path, `file://`, `memory://`, `s3://`, `gs://`, `http(s)://`);
//! - [`Store`] opens it through zarrs (filesystem and memory natively, object stores through
//!   `object_store` and zarrs' async-to-sync adapter);
//! - [`Recording`] opens a 3-D (t, y, x) Zarr v2 or v3 array of any integer or float type and reads
//!   any box of it into an ndarray;
//! - [`Output`] and [`RecordingWriter`] write Zarr v3 recordings that never look complete until they
//!   are;
//! - [`TiffSource`] and [`ingest_tiff`] convert multi-page TIFF/BigTIFF files and folders of frames.
//!
//! This crate knows nothing of the numerics (`tessera-kernels`): it moves arrays, it does not
//! compute on them.

mod aws_profile;
mod error;
mod ingest;
pub mod manifest;
pub mod multipart;
pub mod provenance;
mod recording;
mod run_root;
mod store;
mod tiff_source;
mod uri;
mod writer;

pub use error::IoError;
pub use ingest::{IngestOptions, IngestReport, ingest_tiff};
pub use manifest::{Difference, FileDigest, Manifest};
pub use provenance::{Verification, verify};
pub use recording::{DEFAULT_ARRAY_PATHS, Recording};
pub use run_root::{RunRoot, RunSource};
pub use store::Store;
pub use tiff_source::{FrameIter, TiffSource};
pub use uri::Location;
pub use writer::{
    DEFAULT_CHUNKS, DERIVED_ZSTD_LEVEL, Output, RecordingWriter, Sample, WriteOptions,
};

/// Sets zarrs' process-wide options tessera relies on (no `_zarrs` attribute in written metadata).
/// Called by every entry point that writes; idempotent.
pub fn configure_zarrs() {
    zarrs::config::global_config_mut().set_include_zarrs_metadata(false);
}

#[cfg(test)]
mod tests;
