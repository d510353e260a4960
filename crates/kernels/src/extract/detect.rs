//! Detection and initialisation: greedy seeding on the correlation x peak-to-noise image of a
//! band-passed movie (CNMF-E, Zhou et al. 2018, `init_neurons_corr_pnr`), each seed's footprint
//! grown from the correlation of its neighbours with the seed's trace, then deflated from the data
//! so overlapping neighbours are found on the residual.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::filter::BandPass;
use super::{Component, PixelMovie};
use crate::stats::{PsdAverage, noise_fft, noise_image};
use crate::summary::LocalCorrelation;

/// Detection parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectParams {
    /// Expected soma radius in pixels (CaImAn's gSig); sets filters, windows and sizes.
    pub radius_px: f64,
    /// Seeds need a local correlation at least this high (band-passed movie).
    pub min_corr: f32,
    /// ... and a peak-to-noise ratio at least this high.
    pub min_pnr: f32,
    /// Pixels join a footprint when their trace correlates with the seed's above this.
    pub pixel_corr: f32,
    /// Stop after this many components (0: no limit).
    pub max_components: usize,
    /// Membership correlations use traces summed over this many frames: calcium transients last
    /// several frames while shot noise does not, so binning raises the correlation of dim cells'
    /// pixels (Suite2p bins the movie for detection the same way). 1 disables binning.
    pub bin_frames: usize,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            radius_px: 5.0,
            min_corr: 0.6,
            min_pnr: 6.0,
            pixel_corr: 0.4,
            max_components: 0,
            bin_frames: 1,
        }
    }
}

/// Images computed for detection (kept for reports).
#[derive(Debug, Clone)]
pub struct DetectionImages {
    pub correlation: Array2<f32>,
    pub pnr: Array2<f32>,
}

/// Finds and initialises components in `movie` (t, y, x). Returns them with the seeding images.
pub fn detect(movie: ArrayView3<f32>, params: &DetectParams) -> (Vec<Component>, DetectionImages) {
    detect_within(movie, params, None)
}

/// [`detect`], seeding components only where `seedable` (same shape as a frame) is true, e.g.
/// away from the borders a registered movie fills in for content that moved out of view.
/// Footprints may still extend over the other pixels.
pub fn detect_within(
    movie: ArrayView3<f32>,
    params: &DetectParams,
    seedable: Option<ArrayView2<bool>>,
) -> (Vec<Component>, DetectionImages) {
    let (t, h, w) = movie.dim();
    let seedable = seedable.filter(|m| m.dim() == (h, w));
    let r = params.radius_px.max(1.0);
    let mean = movie
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array2::zeros((h, w)));
    // Band-passed, mean-free movie for the seeding images (one filter and buffers per task).
    let mut filtered = Array3::<f32>::zeros((t, h, w));
    filtered
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    BandPass::new(r / 2.0, 2.0 * r),
                    Array2::<f32>::zeros((h, w)),
                )
            },
            |(bp, centred), (i, out)| {
                ndarray::Zip::from(&mut *centred)
                    .and(movie.index_axis(Axis(0), i))
                    .and(&mean)
                    .for_each(|c, &v, &m| *c = v - m);
                bp.apply(centred.view(), out);
            },
        );
    let correlation = LocalCorrelation::from_movie(filtered.view()).image();
    let noise = noise_image(filtered.view(), PsdAverage::Mean);
    let max = filtered.fold_axis(Axis(0), f32::NEG_INFINITY, |a, &b| a.max(b));
    let pnr = ndarray::Zip::from(&max)
        .and(&noise)
        .map_collect(|&m, &s| if s > 0.0 { m / s } else { 0.0 });
    drop(filtered);

    // Candidate seeds: local maxima of corr x pnr within the radius, above both thresholds.
    let score = ndarray::Zip::from(&correlation)
        .and(&pnr)
        .map_collect(|&c, &p| {
            if c >= params.min_corr && p >= params.min_pnr {
                c * p
            } else {
                0.0
            }
        });
    let ri = r.ceil() as isize;
    let mut seeds: Vec<(f32, usize, usize)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = score[[y, x]];
            if v <= 0.0 || seedable.is_some_and(|m| !m[[y, x]]) {
                continue;
            }
            let mut is_max = true;
            'nb: for dy in -ri..=ri {
                for dx in -ri..=ri {
                    let (qy, qx) = (y as isize + dy, x as isize + dx);
                    if (dy, dx) == (0, 0)
                        || qy < 0
                        || qx < 0
                        || qy >= h as isize
                        || qx >= w as isize
                    {
                        continue;
                    }
                    let q = score[[qy as usize, qx as usize]];
                    // Ties break by position so the order is deterministic.
                    if q > v || (q == v && (qy as usize, qx as usize) < (y, x)) {
                        is_max = false;
                        break 'nb;
                    }
                }
            }
            if is_max {
                seeds.push((v, y, x));
            }
        }
    }
    seeds.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));

    // Residual: the mean-free raw movie, pixel-major, deflated as components are found.
    let mut residual = PixelMovie::from_frames(movie).data;
    for (p, mut row) in residual.axis_iter_mut(Axis(0)).enumerate() {
        let m = mean[[p / w, p % w]];
        row.mapv_inplace(|v| v - m);
    }
    let mut covered = vec![false; h * w];
    let mut comps = Vec::new();
    let reach = (2.0 * r).ceil() as isize;
    let min_size = (std::f64::consts::PI * r * r / 4.0).ceil() as usize;
    let bin_frames = params.bin_frames.clamp(1, t.max(1));
    for (_, sy, sx) in seeds {
        if params.max_components > 0 && comps.len() >= params.max_components {
            break;
        }
        if covered[sy * w + sx] {
            continue;
        }
        // Seed trace: the residual averaged over the 3x3 neighbourhood.
        let mut c = vec![0.0f32; t];
        let mut n = 0.0;
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                let (qy, qx) = (sy as isize + dy, sx as isize + dx);
                if qy < 0 || qx < 0 || qy >= h as isize || qx >= w as isize {
                    continue;
                }
                let row = residual.row(qy as usize * w + qx as usize);
                for (ci, &v) in c.iter_mut().zip(row.iter()) {
                    *ci += v;
                }
                n += 1.0;
            }
        }
        c.iter_mut().for_each(|v| *v /= n);
        // A seed whose residual trace has no transient above the noise was explained already.
        let noise = noise_fft(&c, PsdAverage::Mean) as f32;
        let peak = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if noise <= 0.0 || peak / noise < params.min_pnr / 2.0 {
            continue;
        }
        let cc: f32 = c.iter().map(|v| v * v).sum();
        let cb = bin(&c, bin_frames);
        let cb_norm = cb.iter().map(|v| v * v).sum::<f32>().sqrt();
        // Correlation and regression of each pixel in the window with the seed trace.
        let (y0, y1) = (
            (sy as isize - reach).max(0) as usize,
            ((sy as isize + reach) as usize).min(h - 1),
        );
        let (x0, x1) = (
            (sx as isize - reach).max(0) as usize,
            ((sx as isize + reach) as usize).min(w - 1),
        );
        let (bh, bw) = (y1 - y0 + 1, x1 - x0 + 1);
        let mut corr = vec![0.0f32; bh * bw];
        let mut amp = vec![0.0f32; bh * bw];
        let mut smooth = vec![0.0f32; t];
        for by in 0..bh {
            for bx in 0..bw {
                let (y, x) = (y0 + by, x0 + bx);
                let p = y * w + x;
                // Amplitude: regression of the pixel on the seed trace.
                let dot: f32 = residual.row(p).iter().zip(&c).map(|(v, ci)| v * ci).sum();
                let i = by * bw + bx;
                amp[i] = (dot / cc).max(0.0);
                // Membership: correlation of the 3x3-averaged pixel trace with the seed trace
                // (single pixels are too noisy at two-photon photon counts).
                smooth.iter_mut().for_each(|v| *v = 0.0);
                let mut n = 0.0f32;
                for qy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for qx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        for (sv, &v) in smooth.iter_mut().zip(residual.row(qy * w + qx).iter()) {
                            *sv += v;
                        }
                        n += 1.0;
                    }
                }
                let (mut sd, mut ss) = (0.0f32, 0.0f32);
                for (&sv, &ci) in bin(&smooth, bin_frames).iter().zip(cb.iter()) {
                    let v = sv / n;
                    sd += v * ci;
                    ss += v * v;
                }
                corr[i] = if ss > 0.0 && cb_norm > 0.0 {
                    sd / (ss.sqrt() * cb_norm)
                } else {
                    0.0
                };
            }
        }
        // Footprint: pixels connected to the seed whose correlation passes the threshold.
        let mut inside = vec![false; bh * bw];
        let start = (sy - y0) * bw + (sx - x0);
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if inside[i] || corr[i] < params.pixel_corr {
                continue;
            }
            let (by, bx) = (i / bw, i % bw);
            let dist2 = (by as f64 + y0 as f64 - sy as f64).powi(2)
                + (bx as f64 + x0 as f64 - sx as f64).powi(2);
            if dist2 > (2.0 * r).powi(2) {
                continue;
            }
            inside[i] = true;
            if by > 0 {
                stack.push(i - bw);
            }
            if by + 1 < bh {
                stack.push(i + bw);
            }
            if bx > 0 {
                stack.push(i - 1);
            }
            if bx + 1 < bw {
                stack.push(i + 1);
            }
        }
        let support: Vec<usize> = (0..bh * bw)
            .filter(|&i| inside[i] && amp[i] > 0.0)
            .collect();
        if support.len() < min_size {
            continue;
        }
        let amax = support.iter().map(|&i| amp[i]).fold(0.0f32, f32::max);
        let mut comp = Component {
            pixels: Vec::new(),
            weights: Vec::new(),
            trace: Vec::new(),
            seed: [sy, sx],
        };
        for &i in &support {
            let p = (y0 + i / bw) * w + (x0 + i % bw);
            comp.pixels.push(p as u32);
            comp.weights.push(amp[i] / amax);
            // Deflate: remove this component's contribution from the residual.
            let a = amp[i];
            for (v, &ci) in residual.row_mut(p).iter_mut().zip(&c) {
                *v -= a * ci;
            }
            if amp[i] >= 0.5 * amax {
                covered[p] = true;
            }
        }
        comp.trace = c.iter().map(|v| v * amax).collect();
        comps.push(comp);
    }
    (comps, DetectionImages { correlation, pnr })
}

/// Sums of consecutive runs of `k` samples (a last, shorter run is dropped unless it is the only
/// one). `k = 1` returns the trace unchanged.
fn bin(trace: &[f32], k: usize) -> std::borrow::Cow<'_, [f32]> {
    if k <= 1 || trace.len() < 2 * k {
        return std::borrow::Cow::Borrowed(trace);
    }
    std::borrow::Cow::Owned(trace.chunks_exact(k).map(|c| c.iter().sum()).collect())
}
