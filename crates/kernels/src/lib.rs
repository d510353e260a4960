//! tessera-kernels: the numerics of tessera, as plain functions and types over ndarray.
//!
//! Arrays in, arrays out: this crate never touches storage, async runtimes or the network, so every
//! kernel can be tested against a slow reference and run anywhere (a worker, a test, a notebook).
//! Parallelism is data-parallel through rayon.
//!
//! - [`sim`]: the ground-truth simulator;
//! - [`denoise`]: local low-rank (PMD-style) denoising with a noise-null rank choice;
//! - [`register`]: rigid motion correction by phase correlation;
//! - [`extract`]: detection, CNMF demixing (HALS) and component QC on one tile;
//! - [`traces`]: dF/F with a running-percentile baseline;
//! - [`deconv`]: spike inference (OASIS, AR(1) and AR(2));
//! - [`metrics`]: accuracy against ground truth in the field's four matching conventions;
//! - [`stats`]: per-pixel moments and noise that add up across time chunks;
//! - [`summary`]: local correlation and peak-to-noise images from mergeable statistics;
//! - [`rng`]: the value-stable random streams the simulator draws from.

pub mod deconv;
pub mod denoise;
mod error;
pub mod extract;
mod layout;
pub mod metrics;
pub mod register;
pub mod rng;
pub mod sim;
pub mod stats;
pub mod summary;
pub mod traces;
mod vector;

pub use error::KernelError;
