//! Passes over a movie in runs of whole frames, so the movie never has to be in memory at once:
//! the global refit of traces and background ([`refit`]) and component QC
//! ([`super::quality_streamed`]).
//!
//! Both are exact re-statements of the in-memory updates, not approximations. With the footprints
//! `A` and the background footprints `B` fixed, the HALS updates of the traces `C` and of the
//! background traces `F` act on each frame separately (CNMF's temporal step,
//! Pnevmatikakis et al. 2016; the HALS form of Cichocki & Phan 2009), and the update of `B` needs
//! only sums over frames:
//!
//! ```text
//! c_k(t) <- max(0, c_k(t) + ([A^T (Y - B F)]_k(t) - [A^T A C]_k(t)) / [A^T A]_kk)  per frame
//! f_j(t) <- max(0, f_j(t) + (b_j^T Y(t) - b_j^T A C(t) - b_j^T B F(t)) / b_j^T b_j) per frame
//! b_j    <- max(0, b_j + (Y F^T - A (C F^T) - B (F F^T))_j / (F F^T)_jj)          sums over t
//! ```
//!
//! so one pass over the time chunks updates `C` and `F` chunk by chunk and adds up `Y F^T`,
//! `C F^T` and `F F^T`, and `B` is updated once at the end of the pass. A refit streamed in any
//! number of chunks gives the one-chunk result up to the order of float sums.

use std::ops::Range;

use ndarray::{Array2, ArrayView2, s};

use super::cnmf::{
    BackgroundStats, Shapes, add_residual_sums, background_footprints_pass, background_traces_from,
    initial_background, initial_traces, temporal_gram, temporal_sweeps, update_background_traces,
};
use super::{Background, CnmfParams, Component, PixelMovie};
use crate::KernelError;

/// What a pass does with each run of frames: `visit(frames, y)` with `y` pixels x frames.
pub type ChunkVisitor<'a> =
    dyn FnMut(Range<usize>, ArrayView2<f32>) -> Result<(), KernelError> + 'a;

/// A movie read as consecutive runs of whole frames, each handed over pixel-major
/// (pixels x frames of the run, pixel `p = y * width + x`).
pub trait FrameChunks {
    /// The reader's error; kernel errors raised inside a pass convert into it.
    type Error: From<KernelError>;

    /// (frames, height, width).
    fn dims(&self) -> (usize, usize, usize);

    /// Calls `visit(frames, y)` for runs of frames that partition `0..frames`, in order, and stops
    /// at the first error.
    fn for_each_chunk(&self, visit: &mut ChunkVisitor<'_>) -> Result<(), Self::Error>;
}

/// A movie already in memory is one chunk.
impl FrameChunks for PixelMovie {
    type Error = KernelError;

    fn dims(&self) -> (usize, usize, usize) {
        (self.frames(), self.height, self.width)
    }

    fn for_each_chunk(&self, visit: &mut ChunkVisitor<'_>) -> Result<(), KernelError> {
        visit(0..self.frames(), self.data.view())
    }
}

/// Re-estimates the traces and the background of `comps` on `movie` with their footprints held
/// fixed (HALS temporal and background passes, no spatial update, no merging): the global refit
/// after tiles are merged, so every trace comes from all final footprints at once and carries no
/// seam. Footprints are taken as given (peak 1). Streams `params.iterations + 2` passes over the
/// movie: one to initialise the background, one per iteration, one for the final traces.
///
/// Errors when a chunk does not match the movie's dimensions, or when the reader fails.
pub fn refit<M: FrameChunks + ?Sized>(
    movie: &M,
    comps: Vec<Component>,
    params: &CnmfParams,
) -> Result<(Vec<Component>, Background), M::Error> {
    let (t, height, width) = movie.dims();
    let p_count = height * width;
    // A zero search radius: the masks are exactly the footprints.
    let shapes = Shapes::new(&comps, height, width, 0.0);
    let mut c = initial_traces(&comps, t);
    let rank = params.background_rank.max(1);
    let check = |frames: &Range<usize>, y: &ArrayView2<f32>| {
        if y.nrows() != p_count || y.ncols() != frames.len() || frames.end > t {
            return Err(KernelError::Shape(format!(
                "chunk of frames {frames:?} is {}x{}, expected {p_count} pixels x {} frames within {t}",
                y.nrows(),
                y.ncols(),
                frames.len()
            )));
        }
        Ok(())
    };

    // Initial background: b_0 the residual after the initial components averaged over time, f_0 = 1;
    // with rank 2, f_1 the residual averaged over pixels (shifted to a minimum of 0), b_1 = b_0 / 20.
    let mut pixel_sums = vec![0.0f64; p_count];
    let mut frame_sums = vec![0.0f64; t];
    movie.for_each_chunk(&mut |frames, y| {
        check(&frames, &y)?;
        add_residual_sums(
            y,
            &shapes,
            c.slice(s![.., frames.clone()]),
            &mut pixel_sums,
            &mut frame_sums[frames.clone()],
        );
        Ok(())
    })?;
    let mut bg = initial_background(&pixel_sums, &frame_sums, rank);

    let gram = temporal_gram(&shapes);
    // A movie handed over as one chunk of all frames updates its background footprints in the
    // pass that sums `Y F^T` and leaves `B^T Y` for the next iteration (as demixing does; the same
    // numbers bit for bit), so each iteration after the first reads the movie once, not twice.
    let mut bty: Option<Array2<f32>> = None;
    for _ in 0..params.iterations.max(1) {
        let mut stats = BackgroundStats::new(p_count, comps.len(), rank);
        let mut footprints_updated = false;
        movie.for_each_chunk(&mut |frames, y| {
            check(&frames, &y)?;
            let whole = frames == (0..t);
            let (b, f) = (&mut bg.b, &mut bg.f);
            temporal_sweeps(
                y,
                &shapes,
                &gram,
                c.slice_mut(s![.., frames.clone()]),
                b,
                f.slice(s![.., frames.clone()]),
            );
            match bty.take().filter(|_| whole) {
                Some(bty) => {
                    background_traces_from(bty.view(), &shapes, c.view(), b, f.view_mut());
                }
                None => update_background_traces(
                    y,
                    &shapes,
                    c.slice(s![.., frames.clone()]),
                    b,
                    f.slice_mut(s![.., frames.clone()]),
                ),
            }
            if whole {
                bty = Some(background_footprints_pass(
                    y,
                    &shapes,
                    c.view(),
                    f.view(),
                    b,
                ));
                footprints_updated = true;
            } else {
                stats.add(
                    y,
                    c.slice(s![.., frames.clone()]),
                    f.slice(s![.., frames.clone()]),
                );
            }
            Ok(())
        })?;
        if !footprints_updated {
            stats.update_footprints(&shapes, &mut bg.b);
        }
    }
    movie.for_each_chunk(&mut |frames, y| {
        check(&frames, &y)?;
        temporal_sweeps(
            y,
            &shapes,
            &gram,
            c.slice_mut(s![.., frames.clone()]),
            &bg.b,
            bg.f.slice(s![.., frames.clone()]),
        );
        Ok(())
    })?;

    let out = comps
        .into_iter()
        .enumerate()
        .map(|(k, mut comp)| {
            // Shapes keeps each mask sorted with its values; the footprint is unchanged.
            let (mask, vals) = (&shapes.masks[k], &shapes.values[k]);
            comp.pixels = Vec::with_capacity(mask.len());
            comp.weights = Vec::with_capacity(mask.len());
            for (&p, &v) in mask.iter().zip(vals) {
                if v > 0.0 {
                    comp.pixels.push(p);
                    comp.weights.push(v);
                }
            }
            comp.trace = c.row(k).to_vec();
            comp
        })
        .collect();
    Ok((out, bg))
}

/// A pixel-major movie cut into runs of `frames_per_chunk` frames, for tests of streamed passes
/// against the one-chunk result.
#[derive(Debug, Clone)]
pub struct ChunkedMovie<'a> {
    pub movie: &'a PixelMovie,
    pub frames_per_chunk: usize,
}

impl FrameChunks for ChunkedMovie<'_> {
    type Error = KernelError;

    fn dims(&self) -> (usize, usize, usize) {
        self.movie.dims()
    }

    fn for_each_chunk(&self, visit: &mut ChunkVisitor<'_>) -> Result<(), KernelError> {
        let t = self.movie.frames();
        let step = self.frames_per_chunk.max(1);
        let mut t0 = 0;
        while t0 < t {
            let t1 = (t0 + step).min(t);
            visit(t0..t1, self.movie.data.slice(s![.., t0..t1]))?;
            t0 = t1;
        }
        Ok(())
    }
}
