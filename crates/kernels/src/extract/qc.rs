//! Component quality control (CaImAn's `evaluate_components`, simplified and documented):
//!
//! - trace SNR: `(max c - median c) / sigma_c` with `sigma_c` the PSD noise of the trace;
//! - spatial r-value: Pearson correlation, over the footprint's neighbourhood (its bounding box grown
//!   by 3 px), between the footprint and the residual movie `Y - B F - sum_{j != k} a_j c_j`
//!   averaged over the frames where `c_k` is in its top 5% (at least 3 frames);
//! - size: pixels of the footprint with weight >= 0.2 (CaImAn binarises at 0.2 x max).
//!
//! A component is accepted when SNR >= `min_snr`, r >= `min_r_value` and the size lies within
//! `[min_size_px, max_size_px]`.

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Background, Component, PixelMovie};
use crate::metrics::pearson;
use crate::stats::{PsdAverage, noise_fft};

/// Acceptance thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QcParams {
    pub min_snr: f32,
    pub min_r_value: f32,
    pub min_size_px: usize,
    pub max_size_px: usize,
}

impl QcParams {
    /// Defaults for somata of radius `r` px: SNR >= 3, r >= 0.7, size in [pi r^2 / 4, 3 pi r^2]
    /// (a soma 1.5x elongated with a 30% larger radius still fits; larger blobs are neuropil or
    /// background the low-rank model left behind).
    pub fn for_radius(r: f64) -> QcParams {
        let area = std::f64::consts::PI * r * r;
        QcParams {
            min_snr: 3.0,
            min_r_value: 0.7,
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

/// Scores every component.
pub fn quality(
    movie: &PixelMovie,
    comps: &[Component],
    bg: &Background,
    params: &QcParams,
) -> Vec<QcReport> {
    let (h, w) = (movie.height, movie.width);
    let t = movie.frames();
    // Which components touch each pixel, for the residual.
    let mut by_pixel: Vec<Vec<(usize, f32)>> = vec![Vec::new(); h * w];
    for (k, c) in comps.iter().enumerate() {
        for (&p, &a) in c.pixels.iter().zip(&c.weights) {
            by_pixel[p as usize].push((k, a));
        }
    }
    comps
        .par_iter()
        .enumerate()
        .map(|(k, comp)| {
            if comp.trace.is_empty() || comp.pixels.is_empty() {
                return QcReport {
                    snr: 0.0,
                    r_value: 0.0,
                    size_px: 0,
                    accepted: false,
                };
            }
            let tr = ndarray::ArrayView1::from(&comp.trace);
            let noise = noise_fft(&comp.trace, PsdAverage::Mean) as f32;
            let mut sorted = comp.trace.clone();
            sorted.sort_by(f32::total_cmp);
            let median = sorted[sorted.len() / 2];
            let max = sorted[sorted.len() - 1];
            let snr = if noise > 0.0 {
                (max - median) / noise
            } else {
                0.0
            };
            let size_px = comp.weights.iter().filter(|&&v| v >= 0.2).count();
            // Peak frames.
            let mut order: Vec<usize> = (0..t).collect();
            order.sort_by(|&a, &b| tr[b].total_cmp(&tr[a]).then(a.cmp(&b)));
            order.truncate((t / 20).max(3).min(t));
            // Neighbourhood box.
            let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
            for &p in &comp.pixels {
                let (y, x) = (p as usize / w, p as usize % w);
                y0 = y0.min(y);
                y1 = y1.max(y);
                x0 = x0.min(x);
                x1 = x1.max(x);
            }
            let (y0, x0) = (y0.saturating_sub(3), x0.saturating_sub(3));
            let (y1, x1) = ((y1 + 3).min(h - 1), (x1 + 3).min(w - 1));
            let mut data = Vec::new();
            let mut shape = Vec::new();
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let p = y * w + x;
                    let row = movie.data.row(p);
                    let mut acc = 0.0f32;
                    for &ti in &order {
                        let mut v = row[ti];
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
                    data.push(acc / order.len() as f32);
                    shape.push(
                        by_pixel[p]
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
            let accepted = snr >= params.min_snr
                && r_value >= params.min_r_value
                && (params.min_size_px..=params.max_size_px).contains(&size_px);
            QcReport {
                snr,
                r_value,
                size_px,
                accepted,
            }
        })
        .collect()
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
