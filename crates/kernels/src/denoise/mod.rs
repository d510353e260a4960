//! Local low-rank denoising in the manner of PMD (Buchanan, Kinsella et al. 2019, "Penalized matrix
//! decomposition for denoising, compression, and improved demixing of functional imaging data").
//!
//! The field is cut into overlapping square blocks (edge `block_px`, stride `block_px / 2`, the
//! last block of a row or column flush with the border). Each pixel's trace is centred on its
//! temporal mean `μ` and scaled by its noise `σ` (the high-frequency power spectrum, as
//! [`crate::stats::noise_fft`]), so every block is a pixels x frames matrix `Z` with unit noise.
//! A truncated SVD of `Z` ([`truncated_svd`]) gives candidate components `sᵢ uᵢ vᵢᵀ`; each is kept or
//! dropped by how rough it is:
//!
//! ```text
//! temporal roughness  R_t(v) = Σ_t |v[t-1] - 2 v[t] + v[t+1]|  /  Σ_t |v[t]|
//! spatial roughness   R_s(u) = mean over 4-neighbour pairs |u_i - u_j|  /  mean_i |u_i|
//! ```
//!
//! Calcium transients and cell footprints are smooth, noise is not: white noise gives `R_t ≈ 2.45`
//! and `R_s ≈ 1.41`. The thresholds come from a null: the same SVD applied to pure Gaussian noise
//! blocks of the same shape, and the `1 - confidence` quantile of their components' roughness. The
//! null noise has the spatial correlation of the movie's own noise: registration interpolates, so
//! neighbouring pixels of a registered movie share noise (correlation 0.2-0.5), which makes noise
//! components look smooth in space. The correlation `ρ` between horizontal (and vertical)
//! neighbours is measured on frame-to-frame differences (slow signal cancels; the median over
//! pixel pairs ignores the cells), and the null's white noise is filtered along that axis with the
//! three-tap kernel `[a, 1, a]`, `a = (1 - sqrt(1 - 2ρ²)) / (2ρ)`, whose lag-one correlation is
//! `2a / (1 + 2a²) = ρ` (`ρ` capped at 0.7, the kernel's largest). A
//! component is kept when it is smoother than the null in time *or* in space (PMD's rule); the
//! search stops after `consecutive_failures` rejected components in a row, or at `max_rank`.
//!
//! The kept components are recombined with partition-of-unity weights: each block's reconstruction
//! is weighted by a tent (`min(i + 1, L - i)` along each axis, highest in the block's centre) and
//! the weights are normalised to sum to one at every pixel, so overlapping blocks blend without
//! seams and a block that kept every component reproduces its input exactly:
//!
//! ```text
//! Ŷ[t, p] = μ_p + σ_p Σ_b (w_b(p) / Σ_b' w_b'(p)) Σ_{i kept in b} s_{b,i} u_{b,i}[p] v_{b,i}[t]
//! ```
//!
//! Departures from the paper: components come from a randomized SVD rather than PMD's rank-one
//! fits with total-variation and trend-filtering penalties (the smoothness enters only through the
//! accept/reject test), and the null's noise is correlated in space like the data's rather than
//! white.

mod svd;
#[cfg(test)]
mod tests;

use ndarray::{Array2, Array3, ArrayView3, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use svd::{TruncatedSvd, orthonormal_columns, symmetric_eigen, truncated_svd};

use crate::KernelError;
use crate::rng::Rng;
use crate::stats::{PsdAverage, median, noise_image};

/// Parameters of [`denoise`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiseParams {
    /// Edge of the square blocks, in pixels (a few cell diameters; PMD uses 32-40).
    pub block_px: usize,
    /// Most components kept per block.
    pub max_rank: usize,
    /// A component is kept when it is smoother than this fraction of the null's components.
    pub confidence: f64,
    /// The component search in a block stops after this many rejections in a row.
    pub consecutive_failures: usize,
    /// Pure-noise blocks simulated for the null thresholds.
    pub null_samples: usize,
    /// Power iterations of the randomized SVD.
    pub power_iterations: usize,
    /// Seed of the random probes and of the null (results are deterministic given it).
    pub seed: u64,
}

impl Default for DenoiseParams {
    fn default() -> Self {
        DenoiseParams {
            block_px: 32,
            max_rank: 24,
            confidence: 0.99,
            consecutive_failures: 3,
            null_samples: 80,
            power_iterations: 2,
            seed: 0,
        }
    }
}

/// Extra probe vectors of the randomized SVD beyond the rank sought.
const OVERSAMPLE: usize = 8;
/// Leading components of each null sample whose roughness enters the null distribution. Only the
/// leading ones: in spatially correlated noise they are the smoothest, and a block's first noise
/// component is what the test must reject.
const NULL_COMPONENTS: usize = 3;
/// Fewest frames [`denoise`] accepts (the noise estimate and the temporal roughness need a trace).
pub const MIN_FRAMES: usize = 16;

/// Roughness thresholds below which a component counts as signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub spatial: f64,
    pub temporal: f64,
}

/// What [`denoise`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiseReport {
    /// Block grid (rows, columns).
    pub grid: (usize, usize),
    /// Components kept per block, row-major over the grid.
    pub ranks: Vec<usize>,
    /// Blocks that kept `max_rank` components (they may hold more signal than was kept).
    pub rank_limited_blocks: usize,
    /// Median per-pixel noise (high-frequency PSD) of the input and of the output.
    pub noise_before: f64,
    pub noise_after: f64,
    /// Numbers stored raw (pixels x frames) over numbers stored by the kept components
    /// (`Σ_b rank_b (pixels_b + frames)`, plus the mean and noise images).
    pub compression_ratio: f64,
    pub thresholds: Thresholds,
    /// Measured correlation of the noise between vertical and horizontal neighbours.
    pub noise_correlation: (f64, f64),
}

/// A denoised movie and its report.
#[derive(Debug, Clone)]
pub struct Denoised {
    pub movie: Array3<f32>,
    pub report: DenoiseReport,
}

/// Starts of the blocks of edge `b` along an axis of length `n`: stride `b / 2`, the last flush
/// with the end; one block when `n <= b`.
pub fn block_starts(n: usize, b: usize) -> Vec<usize> {
    if n <= b {
        return vec![0];
    }
    let stride = (b / 2).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&a| a + b < n)
        .collect();
    starts.push(n - b);
    starts
}

/// Tent weight of position `i` in a block of length `len`: 1 at the ends, highest in the middle.
fn tent(i: usize, len: usize) -> f32 {
    (i.min(len - 1 - i) + 1) as f32
}

/// `Σ_t |v[t-1] - 2 v[t] + v[t+1]| / Σ_t |v[t]|` (infinite for a zero or too short vector).
pub fn temporal_roughness(v: &[f32]) -> f64 {
    let mass: f64 = v.iter().map(|x| f64::from(x.abs())).sum();
    if v.len() < 3 || mass == 0.0 {
        return f64::INFINITY;
    }
    let curv: f64 = v
        .windows(3)
        .map(|w| f64::from((w[0] - 2.0 * w[1] + w[2]).abs()))
        .sum();
    curv / mass
}

/// Mean absolute difference over horizontally and vertically adjacent pixels of `u` (a `h x w`
/// image, row-major) over its mean absolute value (infinite for a zero image or a single pixel).
pub fn spatial_roughness(u: &[f32], h: usize, w: usize) -> f64 {
    let mass: f64 = u.iter().map(|x| f64::from(x.abs())).sum();
    let pairs = h * w.saturating_sub(1) + w * h.saturating_sub(1);
    if mass == 0.0 || pairs == 0 || u.len() != h * w {
        return f64::INFINITY;
    }
    let mut diff = 0.0f64;
    for y in 0..h {
        for x in 0..w {
            let v = u[y * w + x];
            if x + 1 < w {
                diff += f64::from((v - u[y * w + x + 1]).abs());
            }
            if y + 1 < h {
                diff += f64::from((v - u[(y + 1) * w + x]).abs());
            }
        }
    }
    (diff / pairs as f64) / (mass / (h * w) as f64)
}

/// The `q` quantile of `v` (linear interpolation between order statistics).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Roughness thresholds for `h x w` blocks of `frames` frames: the `1 - confidence` quantiles of
/// the roughness of the leading components of `null_samples` pure-noise blocks whose noise has
/// neighbour correlations `correlation` (vertical, horizontal); (0, 0) is white noise.
pub fn null_thresholds(
    h: usize,
    w: usize,
    frames: usize,
    correlation: (f64, f64),
    params: &DenoiseParams,
) -> Thresholds {
    let (ay, ax) = (tap_for(correlation.0), tap_for(correlation.1));
    let stats: Vec<(f64, f64)> = (0..params.null_samples.max(1))
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut rng = Rng::new(params.seed, (1 << 32) + i as u64);
            let z = correlated_noise(h, w, frames, ay, ax, &mut rng);
            let svd = truncated_svd(
                z.view(),
                NULL_COMPONENTS,
                OVERSAMPLE,
                params.power_iterations,
                &mut rng,
            );
            (0..svd.s.len())
                .map(|k| {
                    let u: Vec<f32> = svd.u.column(k).to_vec();
                    let v: Vec<f32> = svd.vt.row(k).to_vec();
                    (spatial_roughness(&u, h, w), temporal_roughness(&v))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let q = 1.0 - params.confidence;
    Thresholds {
        spatial: quantile(stats.iter().map(|s| s.0).collect(), q),
        temporal: quantile(stats.iter().map(|s| s.1).collect(), q),
    }
}

/// The tap `a` of the kernel `[a, 1, a]` whose filtered white noise has lag-one correlation `rho`
/// (`2a / (1 + 2a²) = rho`); 0 for `rho <= 0`, `rho` capped at 0.7.
pub fn tap_for(rho: f64) -> f64 {
    if rho.is_nan() || rho <= 1e-6 {
        return 0.0;
    }
    let rho = rho.min(0.7);
    (1.0 - (1.0 - 2.0 * rho * rho).sqrt()) / (2.0 * rho)
}

/// Pixels x frames noise: white Gaussian fields of `(h + 2) x (w + 2)` filtered by `[ay, 1, ay]`
/// down the columns and `[ax, 1, ax]` along the rows, cropped to `h x w`.
fn correlated_noise(
    h: usize,
    w: usize,
    frames: usize,
    ay: f64,
    ax: f64,
    rng: &mut Rng,
) -> Array2<f32> {
    let (ay, ax) = (ay as f32, ax as f32);
    let mut z = Array2::<f32>::zeros((h * w, frames));
    let (hh, ww) = (h + 2, w + 2);
    let mut field = vec![0.0f32; hh * ww];
    let mut rows = vec![0.0f32; hh * w];
    for f in 0..frames {
        field.iter_mut().for_each(|v| *v = rng.normal() as f32);
        for y in 0..hh {
            for x in 0..w {
                let i = y * ww + x + 1;
                rows[y * w + x] = field[i] + ax * (field[i - 1] + field[i + 1]);
            }
        }
        for y in 0..h {
            for x in 0..w {
                let i = (y + 1) * w + x;
                z[[y * w + x, f]] = rows[i] + ay * (rows[i - w] + rows[i + w]);
            }
        }
    }
    z
}

/// Median, over pairs of vertically (then horizontally) adjacent pixels, of the correlation of
/// their frame-to-frame differences: the spatial correlation of the noise, with slow signal
/// cancelled and cells (a minority of pairs) outvoted. (0, 0) for fewer than 3 frames.
pub fn neighbour_noise_correlation(movie: ArrayView3<f32>) -> (f64, f64) {
    let (t, h, w) = movie.dim();
    if t < 3 {
        return (0.0, 0.0);
    }
    // Per row: the correlations of its (pixel, pixel below) and (pixel, pixel right) pairs.
    let per_row: Vec<(Vec<f64>, Vec<f64>)> = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut sum = vec![[0.0f64; 5]; w];
            for f in 0..t - 1 {
                let d = |yy: usize, x: usize| f64::from(movie[[f + 1, yy, x]] - movie[[f, yy, x]]);
                for (x, acc) in sum.iter_mut().enumerate() {
                    let a = d(y, x);
                    acc[0] += a * a;
                    if y + 1 < h {
                        let b = d(y + 1, x);
                        acc[1] += b * b;
                        acc[2] += a * b;
                    }
                    if x + 1 < w {
                        let c = d(y, x + 1);
                        acc[3] += c * c;
                        acc[4] += a * c;
                    }
                }
            }
            let corr = |sab: f64, saa: f64, sbb: f64| {
                let den = (saa * sbb).sqrt();
                (den > 0.0).then(|| sab / den)
            };
            let down = (0..w)
                .filter(|_| y + 1 < h)
                .filter_map(|x| corr(sum[x][2], sum[x][0], sum[x][1]))
                .collect();
            let right = (0..w.saturating_sub(1))
                .filter_map(|x| corr(sum[x][4], sum[x][0], sum[x][3]))
                .collect();
            (down, right)
        })
        .collect();
    let mut down: Vec<f64> = per_row.iter().flat_map(|r| r.0.iter().copied()).collect();
    let mut right: Vec<f64> = per_row.iter().flat_map(|r| r.1.iter().copied()).collect();
    (
        median(&mut down).unwrap_or(0.0),
        median(&mut right).unwrap_or(0.0),
    )
}

/// One block's kept components, folded into data units: the block's share of the output is
/// `u (pixels x rank) · vt (rank x frames)`, `u` already multiplied by each pixel's noise and
/// partition-of-unity weight.
struct BlockFit {
    y0: usize,
    x0: usize,
    h: usize,
    w: usize,
    u: Array2<f32>,
    vt: Array2<f32>,
}

fn validate(movie: &ArrayView3<f32>, params: &DenoiseParams) -> Result<(), KernelError> {
    let bad = |name, reason: &str| {
        Err(KernelError::InvalidParameter {
            name,
            reason: reason.to_string(),
        })
    };
    if params.block_px < 4 {
        return bad("block_px", "blocks need an edge of at least 4 pixels");
    }
    if params.max_rank == 0 {
        return bad("max_rank", "must be at least 1");
    }
    if !(params.confidence > 0.0 && params.confidence < 1.0) {
        return bad("confidence", "must lie strictly between 0 and 1");
    }
    if params.consecutive_failures == 0 {
        return bad("consecutive_failures", "must be at least 1");
    }
    let (t, h, w) = movie.dim();
    if t < MIN_FRAMES || h == 0 || w == 0 {
        return Err(KernelError::Shape(format!(
            "denoising needs at least {MIN_FRAMES} frames of a non-empty field, got {t} frames of {h}x{w}"
        )));
    }
    if let Some((i, _)) = movie.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let (f, y, x) = (i / (h * w), (i / w) % h, i % w);
        return Err(KernelError::NonFinite { frame: f, y, x });
    }
    Ok(())
}

/// Denoises `movie` (t, y, x) by local low-rank approximation; see the module documentation.
/// Errors on parameters out of range, fewer than [`MIN_FRAMES`] frames, or a non-finite sample.
/// A constant or all-zero movie comes back unchanged with rank 0 everywhere.
pub fn denoise(movie: ArrayView3<f32>, params: &DenoiseParams) -> Result<Denoised, KernelError> {
    validate(&movie, params)?;
    let (t, h, w) = movie.dim();
    let mean = movie
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array2::zeros((h, w)));
    let noise = noise_image(movie, PsdAverage::Mean);
    let sigma = noise.mapv(|s| if s > 0.0 && s.is_finite() { s } else { 1.0 });
    let ys = block_starts(h, params.block_px);
    let xs = block_starts(w, params.block_px);
    let (bh, bw) = (params.block_px.min(h), params.block_px.min(w));

    // Partition-of-unity normaliser: the sum of every block's tent weight at each pixel.
    let mut weight_sum = Array2::<f32>::zeros((h, w));
    for &y0 in &ys {
        for &x0 in &xs {
            for dy in 0..bh {
                for dx in 0..bw {
                    weight_sum[[y0 + dy, x0 + dx]] += tent(dy, bh) * tent(dx, bw);
                }
            }
        }
    }
    let noise_correlation = neighbour_noise_correlation(movie);
    let thresholds = null_thresholds(bh, bw, t, noise_correlation, params);

    let origins: Vec<(usize, usize, usize)> = ys
        .iter()
        .flat_map(|&y0| xs.iter().map(move |&x0| (y0, x0)))
        .enumerate()
        .map(|(i, (y0, x0))| (i, y0, x0))
        .collect();
    let fits: Vec<(BlockFit, usize)> = origins
        .par_iter()
        .map(|&(index, y0, x0)| {
            let mut z = Array2::<f32>::zeros((bh * bw, t));
            for (f, frame) in movie.axis_iter(Axis(0)).enumerate() {
                for dy in 0..bh {
                    for dx in 0..bw {
                        let (y, x) = (y0 + dy, x0 + dx);
                        z[[dy * bw + dx, f]] = (frame[[y, x]] - mean[[y, x]]) / sigma[[y, x]];
                    }
                }
            }
            let mut rng = Rng::new(params.seed, index as u64);
            let svd = truncated_svd(
                z.view(),
                params.max_rank,
                OVERSAMPLE,
                params.power_iterations,
                &mut rng,
            );
            let mut kept = Vec::new();
            let mut failures = 0;
            for k in 0..svd.s.len() {
                let u: Vec<f32> = svd.u.column(k).to_vec();
                let v: Vec<f32> = svd.vt.row(k).to_vec();
                let smooth = temporal_roughness(&v) < thresholds.temporal
                    || spatial_roughness(&u, bh, bw) < thresholds.spatial;
                if smooth {
                    kept.push(k);
                    failures = 0;
                } else {
                    failures += 1;
                    if failures >= params.consecutive_failures {
                        break;
                    }
                }
            }
            let rank = kept.len();
            let u = Array2::from_shape_fn((bh * bw, rank), |(p, j)| {
                let (y, x) = (y0 + p / bw, x0 + p % bw);
                let share = tent(p / bw, bh) * tent(p % bw, bw) / weight_sum[[y, x]];
                svd.u[[p, kept[j]]] * (svd.s[kept[j]] as f32) * sigma[[y, x]] * share
            });
            let vt = svd.vt.select(Axis(0), &kept);
            let fit = BlockFit {
                y0,
                x0,
                h: bh,
                w: bw,
                u,
                vt,
            };
            (fit, rank)
        })
        .collect();

    // Recombine, parallel over runs of frames (each run owns its output frames).
    let mut out = Array3::<f32>::zeros((t, h, w));
    const RUN: usize = 32;
    out.axis_chunks_iter_mut(Axis(0), RUN)
        .into_par_iter()
        .enumerate()
        .for_each(|(run, mut frames)| {
            let t0 = run * RUN;
            let n = frames.len_of(Axis(0));
            for mut frame in frames.axis_iter_mut(Axis(0)) {
                frame.assign(&mean);
            }
            for (fit, _) in &fits {
                if fit.vt.nrows() == 0 {
                    continue;
                }
                let part = fit.u.dot(&fit.vt.slice(s![.., t0..t0 + n]));
                for (p, row) in part.axis_iter(Axis(0)).enumerate() {
                    let (y, x) = (fit.y0 + p / fit.w, fit.x0 + p % fit.w);
                    for (f, &v) in row.iter().enumerate() {
                        frames[[f, y, x]] += v;
                    }
                }
            }
        });

    let ranks: Vec<usize> = fits.iter().map(|f| f.1).collect();
    let stored: f64 = fits
        .iter()
        .map(|(f, r)| (*r * (f.h * f.w + t)) as f64)
        .sum::<f64>()
        + 2.0 * (h * w) as f64;
    let noise_after = noise_image(out.view(), PsdAverage::Mean);
    let med =
        |a: &Array2<f32>| median(&mut a.iter().map(|&v| f64::from(v)).collect()).unwrap_or(0.0);
    let report = DenoiseReport {
        grid: (ys.len(), xs.len()),
        rank_limited_blocks: ranks.iter().filter(|&&r| r >= params.max_rank).count(),
        ranks,
        noise_before: med(&noise),
        noise_after: med(&noise_after),
        compression_ratio: (t * h * w) as f64 / stored,
        thresholds,
        noise_correlation,
    };
    Ok(Denoised { movie: out, report })
}
