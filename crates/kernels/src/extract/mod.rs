//! Source extraction on one tile: detection (greedy seeding on correlation x peak-to-noise), CNMF
//! demixing with HALS updates and a low-rank background, merging, and component quality control.
//!
//! The movie of a tile is held in memory as a pixel-major matrix `Y` (pixels x frames). [`tiles`]
//! runs the chain on spatial tiles with halos and merges the ROIs across tile edges; a global
//! [`refit`] of traces and background ends both the tiled and the untiled path.

mod cnmf;
mod detect;
pub mod filter;
mod qc;
pub mod stream;
pub mod tiles;

pub use cnmf::{Background, CnmfParams, demix};
pub use detect::{
    DetectParams, DetectionImages, Morphology, detect, detect_pixel_major, detect_within,
};
pub use qc::{PARTLY_IN_VIEW, QcParams, QcReport, dense_footprints, quality};
pub use stream::{ChunkVisitor, FrameChunks, refit};

use ndarray::{Array2, ArrayView3};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A movie as a pixel-major matrix: row `p = y * width + x` holds pixel p's trace.
#[derive(Debug, Clone)]
pub struct PixelMovie {
    pub data: Array2<f32>,
    pub height: usize,
    pub width: usize,
}

impl PixelMovie {
    /// Transposes a (t, y, x) movie.
    pub fn from_frames(movie: ArrayView3<f32>) -> PixelMovie {
        Self::from_frames_in(movie, Vec::new())
    }

    /// [`Self::from_frames`] into `buffer`'s allocation (resized to the movie; its contents are
    /// overwritten). Reusing a freed working array of the same size spares faulting in the pages
    /// of a fresh one (for a tile of 3000 x 256 x 256 pixels, 0.8 GB).
    pub fn from_frames_in(movie: ArrayView3<f32>, mut buffer: Vec<f32>) -> PixelMovie {
        // A blocked transpose: each task fills the rows of a block of pixels, a block of frames at
        // a time (one contiguous run of pixels read from each frame), so reads and writes both stay
        // within a few cache lines.
        const PIXELS: usize = 256;
        const FRAMES: usize = 64;
        let (t, h, w) = movie.dim();
        let hw = h * w;
        let movie = movie.as_standard_layout();
        let src = movie.as_slice().expect("standard layout");
        if buffer.is_empty() {
            // A fresh allocation: zeroed pages from the system, not a pass of writes.
            buffer = vec![0.0; hw * t];
        } else {
            buffer.resize(hw * t, 0.0);
        }
        let mut data = Array2::from_shape_vec((hw, t), buffer).expect("sized to the movie");
        if let Some(dst) = data.as_slice_mut() {
            dst.par_chunks_mut(PIXELS * t.max(1))
                .enumerate()
                .for_each(|(b, block)| {
                    let p0 = b * PIXELS;
                    let n = block.len() / t.max(1);
                    for t0 in (0..t).step_by(FRAMES) {
                        for ti in t0..(t0 + FRAMES).min(t) {
                            let frame = &src[ti * hw + p0..ti * hw + p0 + n];
                            for (i, &v) in frame.iter().enumerate() {
                                block[i * t + ti] = v;
                            }
                        }
                    }
                });
        }
        PixelMovie {
            data,
            height: h,
            width: w,
        }
    }

    /// [`Self::from_frames`] the obvious way (the reference for its test).
    #[cfg(test)]
    fn from_frames_reference(movie: ArrayView3<f32>) -> PixelMovie {
        let (t, h, w) = movie.dim();
        PixelMovie {
            data: Array2::from_shape_fn((h * w, t), |(p, ti)| movie[[ti, p / w, p % w]]),
            height: h,
            width: w,
        }
    }

    pub fn frames(&self) -> usize {
        self.data.ncols()
    }

    pub fn pixels(&self) -> usize {
        self.data.nrows()
    }
}

/// One extracted component: a sparse footprint over `pixels` (row-major indices, sorted) and its
/// temporal trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    pub trace: Vec<f32>,
    /// Seed position (row, col).
    pub seed: [usize; 2],
}

impl Component {
    /// Weighted centroid (row, col) of the footprint.
    pub fn centroid(&self, width: usize) -> [f64; 2] {
        let (mut sy, mut sx, mut sw) = (0.0, 0.0, 0.0);
        for (&p, &w) in self.pixels.iter().zip(&self.weights) {
            let w = f64::from(w);
            sy += w * (p as usize / width) as f64;
            sx += w * (p as usize % width) as f64;
            sw += w;
        }
        if sw > 0.0 {
            [sy / sw, sx / sw]
        } else {
            [self.seed[0] as f64, self.seed[1] as f64]
        }
    }
}

#[cfg(test)]
mod tests;
