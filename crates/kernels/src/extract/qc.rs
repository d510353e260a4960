//! Component quality control (CaImAn's `evaluate_components`, simplified and documented):
//!
//! - trace SNR: `(max c - median c) / sigma_c` with `sigma_c` the PSD noise of the trace;
//! - spatial r-value: Pearson correlation, over the footprint's neighbourhood (its bounding box grown
//!   by 3 px), between the footprint and the residual movie `Y - B F - sum_{j != k} a_j c_j`
//!   averaged over the frames where `c_k` is in its top 5% (at least 3 frames);
//! - size: pixels of the footprint with weight >= 0.2 (CaImAn binarises at 0.2 x max).
//!
//! A component is accepted when SNR >= `min_snr`, r >= `min_r_value` (`min_r_value_partly_in_view`
//! when, on a registered movie, the field was out of view over its footprint in more than 5% of the
//! frames) and the size lies within `[min_size_px, max_size_px]`.

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::stream::FrameChunks;
use super::{Background, Component};
use crate::KernelError;
use crate::metrics::pearson;
use crate::stats::{PsdAverage, noise_fft};

/// Acceptance thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QcParams {
    pub min_snr: f32,
    pub min_r_value: f32,
    /// The r-value floor of a footprint that was partly out of view: on a registered movie, the
    /// weighted mean over its pixels of the fraction of frames in view is below
    /// [`PARTLY_IN_VIEW`]. Near a moving field's edge, pieces of neuropil cut by the edge are
    /// small enough to pass the size ceiling that rejects whole neuropil blobs, and correlate less
    /// well with the movie than a cell; the stricter floor (CaImAn's demo pipelines use 0.85
    /// everywhere; its library default is 0.8) rejects them and keeps the cells the edge cuts.
    /// Measured on the simulator presets and the real neurofinder clip (docs/ACCURACY.md,
    /// 2026-11-29): 0.85 everywhere would lose real cells of a short recording.
    pub min_r_value_partly_in_view: f32,
    pub min_size_px: usize,
    pub max_size_px: usize,
}

impl QcParams {
    /// Defaults for somata of radius `r` px: SNR >= 3, r >= 0.7, size in [pi r^2 / 4, 3 pi r^2]
    /// (a soma 1.5x elongated with a 30% larger radius still fits; larger blobs are neuropil or
    /// background the low-rank model left behind); r >= 0.85 for a footprint that was partly out
    /// of view (see `min_r_value_partly_in_view`).
    pub fn for_radius(r: f64) -> QcParams {
        let area = std::f64::consts::PI * r * r;
        QcParams {
            min_snr: 3.0,
            min_r_value: 0.7,
            min_r_value_partly_in_view: 0.85,
            min_size_px: (area / 4.0).ceil() as usize,
            max_size_px: (3.0 * area).ceil() as usize,
        }
    }
}

impl Default for QcParams {
    fn default() -> Self {
        QcParams::for_radius(5.0)
    }
}

/// Quality figures of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QcReport {
    pub snr: f32,
    pub r_value: f32,
    pub size_px: usize,
    pub accepted: bool,
}

/// Below this weighted in-view fraction a footprint counts as partly in view (QC's stricter r-value).
pub const PARTLY_IN_VIEW: f32 = 0.95;

/// Scores every component, streaming one pass over `movie` (the residual at each component's peak
/// frames is summed chunk by chunk). `in_view` is, for a registered movie, the fraction of frames
/// in which each pixel showed recorded content (`register::in_view_fraction`); `None` for a movie
/// that was not registered. Errors when a chunk does not match the movie's dimensions, or when the
/// reader fails.
pub fn quality<M: FrameChunks + ?Sized>(
    movie: &M,
    comps: &[Component],
    bg: &Background,
    params: &QcParams,
    in_view: Option<&Array2<f32>>,
) -> Result<Vec<QcReport>, M::Error> {
    let (t, h, w) = movie.dims();
    // Which components touch each pixel, for the residual.
    let mut by_pixel: Vec<Vec<(usize, f32)>> = vec![Vec::new(); h * w];
    for (k, c) in comps.iter().enumerate() {
        for (&p, &a) in c.pixels.iter().zip(&c.weights) {
            if (p as usize) < h * w {
                by_pixel[p as usize].push((k, a));
            }
        }
    }
    /// What QC knows of a component before the pass over the movie.
    struct Pending {
        snr: f32,
        size_px: usize,
        /// Out of view in part of the recording (weighted in-view fraction < [`PARTLY_IN_VIEW`]).
        partly_in_view: bool,
        /// Peak frames, ascending.
        peaks: Vec<usize>,
        /// Neighbourhood box (inclusive rows and columns).
        rows: (usize, usize),
        cols: (usize, usize),
        /// Residual summed over the peak frames, per box pixel (row-major).
        sums: Vec<f32>,
    }
    let mut pending: Vec<Option<Pending>> = comps
        .par_iter()
        .map(|comp| {
            if comp.trace.len() != t || comp.pixels.is_empty() || t == 0 {
                return None;
            }
            let tr = &comp.trace;
            let noise = noise_fft(tr, PsdAverage::Mean) as f32;
            let mut sorted = tr.clone();
            sorted.sort_by(f32::total_cmp);
            let median = sorted[sorted.len() / 2];
            let max = sorted[sorted.len() - 1];
            let snr = if noise > 0.0 {
                (max - median) / noise
            } else {
                0.0
            };
            let size_px = comp.weights.iter().filter(|&&v| v >= 0.2).count();
            let partly_in_view = in_view.is_some_and(|f| {
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (&p, &v) in comp.pixels.iter().zip(&comp.weights) {
                    let (y, x) = (p as usize / w, p as usize % w);
                    let seen = f.get([y, x]).copied().unwrap_or(1.0);
                    num += f64::from(v.max(0.0) * seen);
                    den += f64::from(v.max(0.0));
                }
                den > 0.0 && num / den < f64::from(PARTLY_IN_VIEW)
            });
            let mut peaks: Vec<usize> = (0..t).collect();
            peaks.sort_by(|&a, &b| tr[b].total_cmp(&tr[a]).then(a.cmp(&b)));
            peaks.truncate((t / 20).max(3).min(t));
            peaks.sort_unstable();
            let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
            for &p in &comp.pixels {
                let (y, x) = (p as usize / w, p as usize % w);
                y0 = y0.min(y);
                y1 = y1.max(y);
                x0 = x0.min(x);
                x1 = x1.max(x);
            }
            let rows = (y0.saturating_sub(3), (y1 + 3).min(h - 1));
            let cols = (x0.saturating_sub(3), (x1 + 3).min(w - 1));
            let n = (rows.1 + 1 - rows.0) * (cols.1 + 1 - cols.0);
            Some(Pending {
                snr,
                size_px,
                partly_in_view,
                peaks,
                rows,
                cols,
                sums: vec![0.0; n],
            })
        })
        .collect();
    movie.for_each_chunk(&mut |frames, y| {
        if y.nrows() != h * w || y.ncols() != frames.len() || frames.end > t {
            return Err(KernelError::Shape(format!(
                "chunk of frames {frames:?} is {}x{}, expected {} pixels x {} frames within {t}",
                y.nrows(),
                y.ncols(),
                h * w,
                frames.len()
            )));
        }
        pending.par_iter_mut().enumerate().for_each(|(k, q)| {
            let Some(q) = q else { return };
            let lo = q.peaks.partition_point(|&ti| ti < frames.start);
            let hi = q.peaks.partition_point(|&ti| ti < frames.end);
            if lo == hi {
                return;
            }
            let peaks = &q.peaks[lo..hi];
            let mut i = 0;
            for yy in q.rows.0..=q.rows.1 {
                for xx in q.cols.0..=q.cols.1 {
                    let p = yy * w + xx;
                    let row = y.row(p);
                    let mut acc = 0.0f32;
                    for &ti in peaks {
                        let mut v = row[ti - frames.start];
                        for j in 0..bg.b.ncols() {
                            v -= bg.b[[p, j]] * bg.f[[j, ti]];
                        }
                        for &(j, a) in &by_pixel[p] {
                            if j != k {
                                v -= a * comps[j].trace[ti];
                            }
                        }
                        acc += v;
                    }
                    q.sums[i] += acc;
                    i += 1;
                }
            }
        });
        Ok(())
    })?;
    Ok(pending
        .into_iter()
        .enumerate()
        .map(|(k, q)| {
            let Some(q) = q else {
                return QcReport {
                    snr: 0.0,
                    r_value: 0.0,
                    size_px: 0,
                    accepted: false,
                };
            };
            let n = q.peaks.len() as f32;
            let data: Vec<f32> = q.sums.iter().map(|v| v / n).collect();
            let mut shape = Vec::with_capacity(data.len());
            for yy in q.rows.0..=q.rows.1 {
                for xx in q.cols.0..=q.cols.1 {
                    shape.push(
                        by_pixel[yy * w + xx]
                            .iter()
                            .find(|(j, _)| *j == k)
                            .map_or(0.0, |x| x.1),
                    );
                }
            }
            let r_value = pearson(
                ndarray::ArrayView1::from(&data),
                ndarray::ArrayView1::from(&shape),
            ) as f32;
            let min_r = if q.partly_in_view {
                params.min_r_value.max(params.min_r_value_partly_in_view)
            } else {
                params.min_r_value
            };
            let accepted = q.snr >= params.min_snr
                && r_value >= min_r
                && (params.min_size_px..=params.max_size_px).contains(&q.size_px);
            QcReport {
                snr: q.snr,
                r_value,
                size_px: q.size_px,
                accepted,
            }
        })
        .collect())
}

/// Dense footprints (pixels x components) of accepted components, for exports and tests.
pub fn dense_footprints(comps: &[Component], pixels: usize) -> Array2<f32> {
    let mut a = Array2::<f32>::zeros((pixels, comps.len()));
    for (k, c) in comps.iter().enumerate() {
        for (&p, &v) in c.pixels.iter().zip(&c.weights) {
            a[[p as usize, k]] = v;
        }
    }
    a
}
