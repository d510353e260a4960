//! tessera-core: the shared vocabulary of tessera.
//!
//! Recording geometry ([`Shape3`], [`Box3`]), element types ([`Dtype`]), the metadata a recording
//! carries ([`RecordingMeta`]), ground-truth region types ([`Region`]) and the tile planner
//! ([`tiling::plan_tiles`]), and the session metadata an NWB file records ([`session::Session`]). This crate does no I/O and
//! knows nothing of async, storage or transport: every other crate may depend on it.

mod dtype;
mod error;
mod geometry;
mod meta;
mod region;
pub mod session;
pub mod task;
pub mod tiling;

pub use dtype::Dtype;
pub use error::CoreError;
pub use geometry::{Box3, Shape3};
pub use meta::{META_ATTRIBUTE, RecordingMeta};
pub use region::{Region, centroid, regions_from_json, regions_to_json};
