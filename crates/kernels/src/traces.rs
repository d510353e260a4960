//! Trace post-processing: dF/F with a running-percentile baseline.
//!
//! ```text
//! F0(t)  = q-th percentile of F over the window [t - W/2, t + W/2]   (CaImAn `detrend_df_f`: 8th
//!                                                                      percentile; Suite2p: a running baseline)
//! dF/F(t) = (F(t) - F0(t)) / F0(t)
//! ```
//!
//! The baseline is evaluated every `W / 16` frames and linearly interpolated between, which differs
//! from the exact per-frame percentile by less than the baseline moves over `W / 16` frames.

use crate::KernelError;
use crate::extract::{Background, Component};

fn percentile(sorted: &[f32], q: f64) -> f32 {
    let idx = ((sorted.len() - 1) as f64 * q / 100.0).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The `q`-th percentile (0-100) of `x` over a centred window of `window` frames, at every frame.
pub fn running_percentile(x: &[f32], window: usize, q: f64) -> Result<Vec<f32>, KernelError> {
    if !(0.0..=100.0).contains(&q) {
        return Err(KernelError::InvalidParameter {
            name: "percentile",
            reason: format!("must lie in [0, 100], got {q}"),
        });
    }
    let n = x.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let window = window.clamp(1, n);
    let step = (window / 16).max(1);
    let at = |t: usize| {
        let lo = t.saturating_sub(window / 2);
        let hi = (lo + window).min(n);
        let lo = hi.saturating_sub(window);
        let mut w: Vec<f32> = x[lo..hi].to_vec();
        w.sort_by(f32::total_cmp);
        percentile(&w, q)
    };
    let knots: Vec<usize> = (0..n).step_by(step).chain(std::iter::once(n - 1)).collect();
    let values: Vec<f32> = knots.iter().map(|&t| at(t)).collect();
    let mut out = vec![0.0f32; n];
    for k in 0..knots.len() - 1 {
        let (t0, t1) = (knots[k], knots[k + 1]);
        for (t, o) in out.iter_mut().enumerate().take(t1 + 1).skip(t0) {
            let f = if t1 > t0 {
                (t - t0) as f32 / (t1 - t0) as f32
            } else {
                0.0
            };
            *o = values[k] * (1.0 - f) + values[k + 1] * f;
        }
    }
    if knots.len() == 1 {
        out[0] = values[0];
    }
    Ok(out)
}

/// dF/F of `f` (fluorescence including any background under the cell) with a running-percentile
/// baseline; frames whose baseline is not positive get 0.
pub fn dff(f: &[f32], window: usize, q: f64) -> Result<Vec<f32>, KernelError> {
    let f0 = running_percentile(f, window, q)?;
    Ok(f.iter()
        .zip(&f0)
        .map(|(&v, &b)| if b > 0.0 { (v - b) / b } else { 0.0 })
        .collect())
}

/// A demixed component's fluorescence as CaImAn's `detrend_df_f` takes it:
/// `F = c + (a^T B / sum a) f`, the component's trace plus the background under its footprint
/// (the footprint-weighted mean of the background's spatial factors `B` times its temporal
/// factors `f`).
pub fn component_fluorescence(c: &Component, bg: &Background) -> Result<Vec<f32>, KernelError> {
    let total: f32 = c.weights.iter().sum();
    let mut f = c.trace.clone();
    if total > 0.0 {
        for (&p, &a) in c.pixels.iter().zip(&c.weights) {
            let p = p as usize;
            if p >= bg.b.nrows() {
                return Err(KernelError::Shape(format!(
                    "footprint pixel {p} outside the background's {} pixels",
                    bg.b.nrows()
                )));
            }
            for j in 0..bg.b.ncols() {
                let s = a * bg.b[[p, j]] / total;
                for (fv, &bv) in f.iter_mut().zip(bg.f.row(j)) {
                    *fv += s * bv;
                }
            }
        }
    }
    Ok(f)
}

/// dF/F of a demixed component: [`dff`] of its [`component_fluorescence`] with a running `q`-th
/// percentile over `window` frames.
pub fn component_dff(
    c: &Component,
    bg: &Background,
    window: usize,
    q: f64,
) -> Result<Vec<f32>, KernelError> {
    dff(&component_fluorescence(c, bg)?, window, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The background under a footprint, written out pixel by pixel for a 2-pixel footprint and a
    /// rank-2 background, then the same dF/F.
    #[test]
    fn component_dff_adds_the_background_under_the_footprint() {
        let t = 200;
        let c = Component {
            pixels: vec![1, 3],
            weights: vec![1.0, 0.5],
            trace: (0..t).map(|i| ((i % 20) as f32).sin().abs()).collect(),
            seed: [0, 1],
        };
        let b = ndarray::arr2(&[[1.0f32, 0.0], [2.0, 1.0], [0.0, 0.0], [4.0, 3.0]]);
        let f =
            ndarray::Array2::from_shape_fn((2, t), |(j, i)| 10.0 + j as f32 + (i as f32) * 0.01);
        let bg = Background { b, f };
        let mut want = c.trace.clone();
        for (i, v) in want.iter_mut().enumerate() {
            let under = |j: usize| (1.0 * bg.b[[1, j]] + 0.5 * bg.b[[3, j]]) / 1.5 * bg.f[[j, i]];
            *v += under(0) + under(1);
        }
        let got = component_dff(&c, &bg, 60, 8.0).unwrap();
        let exp = dff(&want, 60, 8.0).unwrap();
        for (a, b) in got.iter().zip(&exp) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        let outside = Component {
            pixels: vec![9],
            ..c
        };
        assert!(component_dff(&outside, &bg, 60, 8.0).is_err());
    }

    #[test]
    fn running_percentile_tracks_the_exact_one() {
        let mut r = Rng::new(1, 0);
        let x: Vec<f32> = (0..3000)
            .map(|t| (100.0 + 20.0 * (t as f64 / 900.0).sin() + 3.0 * r.normal()) as f32)
            .collect();
        let fast = running_percentile(&x, 480, 8.0).unwrap();
        for t in (0..3000usize).step_by(37) {
            let lo = t.saturating_sub(240);
            let hi = (lo + 480).min(3000);
            let lo = hi - 480;
            let mut w = x[lo..hi].to_vec();
            w.sort_by(f32::total_cmp);
            let exact = percentile(&w, 8.0);
            assert!(
                (fast[t] - exact).abs() < 0.5,
                "t {t}: {} vs {exact}",
                fast[t]
            );
        }
    }

    #[test]
    fn dff_of_transients_on_a_drifting_baseline() {
        // Baseline drifts from 100 to 150; a transient doubles F for 30 frames in the middle.
        let f: Vec<f32> = (0..2000)
            .map(|t| {
                let base = 100.0 + 50.0 * t as f32 / 2000.0;
                if (1000..1030).contains(&t) {
                    2.0 * base
                } else {
                    base
                }
            })
            .collect();
        let d = dff(&f, 300, 20.0).unwrap();
        // On a ramp the 20th percentile of a centred window lags the centre by 0.3 x window x slope
        // (2.25 counts here, about 2% of the baseline).
        assert!(
            d[500].abs() < 0.03 && d[1800].abs() < 0.03,
            "{} {}",
            d[500],
            d[1800]
        );
        assert!((d[1010] - 1.0).abs() < 0.06, "{}", d[1010]);
        assert!(running_percentile(&f, 10, 120.0).is_err());
        assert!(dff(&[], 10, 8.0).unwrap().is_empty());
        assert_eq!(dff(&[0.0; 5], 3, 8.0).unwrap(), vec![0.0; 5]);
    }
}
