//! The tile planner: how each stage of a workflow cuts a recording into tasks that fit a per-task
//! memory budget, and which tiles of the previous stage each tile waits for.
//!
//! Three kinds of tiling (ARCHITECTURE.md, "Tiles"):
//! - [`TilingKind::Temporal`]: runs of whole frames (registration, summary statistics, trace refit);
//! - [`TilingKind::Spatial`]: square-ish tiles over all frames, or over a temporally binned movie
//!   when a core of at least four halos would not fit all frames (as Suite2p bins for detection),
//!   each read with a halo of `2 x cell radius` (detection, demixing); ROIs are owned by the tile
//!   whose core holds their centroid;
//! - [`TilingKind::Spatiotemporal`]: blocks of frames x pixels, read with a spatial overlap
//!   (local low-rank denoising, recombined with partition-of-unity weights);
//! - [`TilingKind::Whole`]: one task over the whole recording that streams it in runs of frames
//!   within the budget (the merge of ROIs across tiles and the global trace refit, QC, spike
//!   inference): its estimate is the budget itself when the movie does not fit.
//!
//! Invariants (property-tested): in every stage the tile cores partition the recording exactly; a
//! halo contains its core and never leaves the recording; along each axis the cores are aligned to
//! the storage chunks (every boundary a multiple of the chunk, except the recording's end) whenever
//! a core spans at least one chunk; a tile of stage `s` depends on exactly the tiles of stage `s - 1`
//! whose cores meet its halo, so dependencies are complete and acyclic, and a detection tile waits
//! only for the denoising blocks it reads, not for the whole stage.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Box3, CoreError, Shape3};

/// How a stage cuts the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TilingKind {
    Temporal,
    Spatial,
    Spatiotemporal,
    Whole,
}

/// A stage's tiling needs, as the planner takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiling {
    pub name: String,
    pub kind: TilingKind,
    /// Float32 copies of its tile (halo included) the stage holds at once, e.g. 3 for movie,
    /// filtered movie and residual.
    pub copies: f64,
    /// Halo (spatial and spatiotemporal tiles) in pixels; default `ceil(2 x cell radius)`.
    pub halo_px: Option<u64>,
    /// Core edge in pixels instead of the largest that fits the budget (spatial kinds).
    pub tile_px: Option<u64>,
    /// Frames per tile instead of the most that fit the budget (temporal and spatiotemporal).
    pub tile_frames: Option<u64>,
}

impl StageTiling {
    /// A stage with defaults: no overrides, default halo.
    pub fn new(name: &str, kind: TilingKind, copies: f64) -> StageTiling {
        StageTiling {
            name: name.to_string(),
            kind,
            copies,
            halo_px: None,
            tile_px: None,
            tile_frames: None,
        }
    }
}

/// What the planner is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    pub shape: Shape3,
    /// Storage chunk shape `[t, y, x]`.
    pub chunks: [u64; 3],
    /// Largest expected cell radius, in pixels.
    pub cell_radius_px: f64,
    /// Memory one task may use, in bytes.
    pub memory_budget_bytes: u64,
    pub stages: Vec<StageTiling>,
}

/// One tile of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    /// Position in its stage's tile list (row-major over t, y, x).
    pub index: usize,
    /// The part of the recording this tile is responsible for.
    pub core: Box3,
    /// What it reads: the core plus the halo, clipped at the recording's borders.
    pub halo: Box3,
    /// Estimated peak memory (bytes): the halo box as float32 times the stage's copies, over
    /// `bin_frames`-binned frames.
    pub memory_bytes: u64,
    /// Tiles of the previous stage (indices) whose cores meet this tile's halo.
    pub depends_on: Vec<usize>,
}

/// The tiles of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    pub kind: TilingKind,
    /// Frames summed into one for this stage's working movie (spatial tiles whose frames would
    /// not fit the budget otherwise); 1 for no binning.
    pub bin_frames: u64,
    pub halo_px: u64,
    pub tiles: Vec<Tile>,
}

/// Tiles of every stage, in workflow order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TilePlan {
    pub shape: Shape3,
    pub stages: Vec<StagePlan>,
}

impl TilePlan {
    /// Total number of tile tasks.
    pub fn task_count(&self) -> usize {
        self.stages.iter().map(|s| s.tiles.len()).sum()
    }
}

/// Smallest spatial core edge the planner accepts (smaller tiles are mostly halo).
pub const MIN_CORE_PX: u64 = 16;

/// Bytes per working sample (float32).
const SAMPLE_BYTES: f64 = 4.0;

fn plan_error(stage: &str, reason: String) -> CoreError {
    CoreError::Plan {
        stage: stage.to_string(),
        reason,
    }
}

/// Cuts `0..n` into `k` runs of whole chunks of `chunk` (the last chunk may be partial), as even as
/// whole chunks allow: the first runs take one chunk more.
fn split_aligned(n: u64, chunk: u64, target: u64) -> Vec<Range<u64>> {
    let chunk = chunk.clamp(1, n.max(1));
    let target = target.clamp(1, n.max(1));
    if target < chunk {
        // Tiles smaller than a chunk: even runs, not aligned (the chunk is read by several tiles).
        let k = n.div_ceil(target);
        return (0..k).map(|i| (i * n / k)..((i + 1) * n / k)).collect();
    }
    let chunks = n.div_ceil(chunk);
    let per = (target / chunk).max(1);
    let k = chunks.div_ceil(per);
    let (base, extra) = (chunks / k, chunks % k);
    let mut out = Vec::with_capacity(k as usize);
    let mut start_chunk = 0;
    for i in 0..k {
        let count = base + u64::from(i < extra);
        let end_chunk = start_chunk + count;
        out.push((start_chunk * chunk)..(end_chunk * chunk).min(n));
        start_chunk = end_chunk;
    }
    out
}

fn grow(r: &Range<u64>, halo: u64, n: u64) -> Range<u64> {
    r.start.saturating_sub(halo)..(r.end + halo).min(n)
}

fn meets(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Plans the tiles of every stage; see the module documentation for the invariants. Errors name
/// the stage whose smallest tile does not fit the budget, or a parameter out of range.
pub fn plan_tiles(input: &PlanInput) -> Result<TilePlan, CoreError> {
    let shape = Shape3::new(input.shape.t, input.shape.y, input.shape.x)?;
    if !(input.cell_radius_px.is_finite() && input.cell_radius_px > 0.0) {
        return Err(plan_error(
            "(all)",
            format!("cell radius must be positive, got {}", input.cell_radius_px),
        ));
    }
    let budget = input.memory_budget_bytes as f64;
    let [ct, cy, cx] = input.chunks.map(|c| c.max(1));
    let mut stages: Vec<StagePlan> = Vec::with_capacity(input.stages.len());
    for st in &input.stages {
        if !(st.copies.is_finite() && st.copies > 0.0) {
            return Err(plan_error(
                &st.name,
                format!("copies must be positive, got {}", st.copies),
            ));
        }
        let halo = st
            .halo_px
            .unwrap_or_else(|| (2.0 * input.cell_radius_px).ceil() as u64);
        let bytes = |frames: u64, py: u64, px: u64| {
            frames as f64 * py as f64 * px as f64 * SAMPLE_BYTES * st.copies
        };
        let frame_bytes = bytes(1, shape.y, shape.x);
        let fixed_edge = |v: Option<u64>, what: &str| -> Result<Option<u64>, CoreError> {
            match v {
                Some(0) => Err(plan_error(&st.name, format!("{what} must be at least 1"))),
                other => Ok(other),
            }
        };
        let tile_px = fixed_edge(st.tile_px, "tile size")?;
        let tile_frames = fixed_edge(st.tile_frames, "frames per tile")?;
        // Cores along each axis, the binning, and the halo per axis.
        let (t_runs, y_runs, x_runs, bin, halo_yx) = match st.kind {
            TilingKind::Temporal => {
                let fit = (budget / frame_bytes).floor() as u64;
                let frames = match tile_frames {
                    Some(f) => f,
                    None if fit >= 1 => fit,
                    None => {
                        return Err(plan_error(
                            &st.name,
                            format!(
                                "one frame of {}x{} needs {:.0} MB here, over the budget of {:.0} MB",
                                shape.y,
                                shape.x,
                                frame_bytes / 1e6,
                                budget / 1e6
                            ),
                        ));
                    }
                };
                (
                    split_aligned(shape.t, ct, frames),
                    std::iter::once(0..shape.y).collect(),
                    std::iter::once(0..shape.x).collect(),
                    1,
                    0,
                )
            }
            TilingKind::Spatial => {
                // Largest core c with (c + 2 halo)^2 x frames x copies within the budget; bin the
                // frames when a core of 4 halos (so the halo at most doubles what a tile reads)
                // does not fit all of them.
                let min_core = MIN_CORE_PX.max(4 * halo).min(shape.y).min(shape.x);
                let edge = |core: u64, n: u64| (core + 2 * halo).min(n);
                let min_bytes_per_frame =
                    bytes(1, edge(min_core, shape.y), edge(min_core, shape.x));
                let frames_fit = (budget / min_bytes_per_frame).floor() as u64;
                if frames_fit == 0 {
                    return Err(plan_error(
                        &st.name,
                        format!(
                            "a {min_core} px tile with a {halo} px halo needs {:.1} MB per frame, over the budget of {:.1} MB",
                            min_bytes_per_frame / 1e6,
                            budget / 1e6
                        ),
                    ));
                }
                let bin = shape.t.div_ceil(frames_fit).max(1);
                let frames = shape.t.div_ceil(bin);
                let core = match tile_px {
                    Some(c) => c,
                    None => {
                        let side = (budget / bytes(frames, 1, 1)).sqrt().floor() as u64;
                        side.saturating_sub(2 * halo).max(min_core)
                    }
                };
                (
                    std::iter::once(0..shape.t).collect(),
                    split_aligned(shape.y, cy, core),
                    split_aligned(shape.x, cx, core),
                    bin,
                    halo,
                )
            }
            TilingKind::Whole => (
                std::iter::once(0..shape.t).collect(),
                std::iter::once(0..shape.y).collect(),
                std::iter::once(0..shape.x).collect(),
                1,
                0,
            ),
            TilingKind::Spatiotemporal => {
                // Frames per block: the override, else up to 2000 (long enough for a stable
                // low-rank fit); then the largest spatial core that fits.
                let frames = tile_frames.unwrap_or(2000).min(shape.t);
                let min_core = MIN_CORE_PX.min(shape.y).min(shape.x);
                let core = match tile_px {
                    Some(c) => c,
                    None => {
                        let side = (budget / bytes(frames, 1, 1)).sqrt().floor() as u64;
                        let core = side.saturating_sub(2 * halo);
                        if core < min_core {
                            return Err(plan_error(
                                &st.name,
                                format!(
                                    "a block of {frames} frames with a {min_core} px core and {halo} px overlap does not fit the budget of {:.1} MB (lower the frames per block)",
                                    budget / 1e6
                                ),
                            ));
                        }
                        core
                    }
                };
                (
                    split_aligned(shape.t, ct, frames),
                    split_aligned(shape.y, cy, core),
                    split_aligned(shape.x, cx, core),
                    1,
                    halo,
                )
            }
        };
        let previous = stages.last();
        let mut tiles = Vec::with_capacity(t_runs.len() * y_runs.len() * x_runs.len());
        for t in &t_runs {
            for y in &y_runs {
                for x in &x_runs {
                    let core = Box3 {
                        t: t.clone(),
                        y: y.clone(),
                        x: x.clone(),
                    };
                    let halo_box = Box3 {
                        t: t.clone(),
                        y: grow(y, halo_yx, shape.y),
                        x: grow(x, halo_yx, shape.x),
                    };
                    let [ht, hy, hx] = halo_box.shape().map(|n| n as u64);
                    let mut memory_bytes = bytes(ht.div_ceil(bin), hy, hx).ceil() as u64;
                    if st.kind == TilingKind::Whole {
                        memory_bytes = memory_bytes.min(input.memory_budget_bytes);
                    }
                    let depends_on = previous.map_or_else(Vec::new, |p| {
                        p.tiles
                            .iter()
                            .filter(|a| {
                                meets(&a.core.t, &halo_box.t)
                                    && meets(&a.core.y, &halo_box.y)
                                    && meets(&a.core.x, &halo_box.x)
                            })
                            .map(|a| a.index)
                            .collect()
                    });
                    tiles.push(Tile {
                        index: tiles.len(),
                        core,
                        halo: halo_box,
                        memory_bytes,
                        depends_on,
                    });
                }
            }
        }
        stages.push(StagePlan {
            name: st.name.clone(),
            kind: st.kind,
            bin_frames: bin,
            halo_px: halo_yx,
            tiles,
        });
    }
    Ok(TilePlan { shape, stages })
}

#[cfg(test)]
mod tests;
