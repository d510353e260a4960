//! End-to-end tests: the real `tessera` binary, real files, and the real Python reference
//! implementations (zarr, tifffile) on the other side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod bad_input;
mod cluster;
mod common;
mod deconvolve;
mod denoise;
mod evaluate;
mod extract;
mod ingest;
mod interop;
mod nwb;
mod object_store;
mod provenance;
mod register;
mod report;
mod run;
mod simulate;
mod tiles;
mod workflow;
