//! Spike inference by OASIS (Friedrich, Zhou & Paninski 2017, "Fast online deconvolution of calcium
//! imaging data"), AR(1) model:
//!
//! ```text
//! minimise_c  1/2 ||c - (y - b)||^2 + lambda ||s||_1   subject to  s_t = c_t - g c_{t-1} >= s_min or 0,
//! ```
//!
//! solved exactly in linear time by pooling adjacent violators: each pool of length `l` starting at
//! `t` holds `c_{t+k} = v g^k`; a pool whose start would imply a negative spike merges with the one
//! before it, `v = (v_1 w_1 + g^{l_1} v_2 w_2) / (w_1 + g^{2 l_1} w_2)`, `w = w_1 + g^{2 l_1} w_2`.
//! The L1 penalty enters as `y'_t = y_t - lambda (1 - g)` (and `y'_T = y_T - lambda`).
//!
//! What [`deconvolve`] estimates from the trace when not given:
//! - noise `sigma`: power spectrum over 0.25-0.5 cycles/frame ([`crate::stats::noise_fft`]);
//! - baseline `b`: 10th percentile of the trace smoothed over ~0.2 s;
//! - `g`: least-squares fit of the autocovariance `C(k+1) = g C(k)` over lags 1..10 (lags >= 1 are
//!   free of white noise), as CaImAn's `estimate_time_constant` does with its lags;
//! - `lambda`: the noise-constrained choice (constrained foopsi): the smallest `lambda >= 0` whose
//!   fit leaves `||c - (y - b)||^2 >= sigma^2 T`, by bisection.

use serde::{Deserialize, Serialize};

use crate::KernelError;
use crate::stats::{PsdAverage, noise_fft};

/// Options of [`deconvolve`]; `None` means "estimate from the trace".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OasisParams {
    /// AR(1) coefficient `g` (per frame).
    pub gamma: Option<f64>,
    /// Indicator decay time in seconds (sets `g = exp(-1 / (decay_s * rate))` when `gamma` is None).
    pub decay_s: Option<f64>,
    /// Sparsity penalty.
    pub lambda: Option<f64>,
    /// Baseline to subtract.
    pub baseline: Option<f64>,
    /// Smallest spike kept (0: any positive).
    pub s_min: f64,
}

/// The result of [`deconvolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Deconvolved {
    /// Denoised calcium (same units as the input, baseline removed).
    pub calcium: Vec<f32>,
    /// Inferred spike amplitudes (>= 0) per frame.
    pub spikes: Vec<f32>,
    pub baseline: f64,
    pub gamma: f64,
    pub noise: f64,
    pub lambda: f64,
}

/// Exact OASIS AR(1) on a baseline-free trace; returns `(c, s)`.
pub fn oasis_ar1(y: &[f64], g: f64, lambda: f64, s_min: f64) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    // Pools: value v (first calcium value), weight w, start, length.
    let mut v: Vec<f64> = Vec::with_capacity(n);
    let mut w: Vec<f64> = Vec::with_capacity(n);
    let mut start: Vec<usize> = Vec::with_capacity(n);
    let mut len: Vec<usize> = Vec::with_capacity(n);
    // g^k for pool lengths, cached.
    let mut gp = vec![1.0f64; n + 1];
    for k in 1..=n {
        gp[k] = gp[k - 1] * g;
    }
    for (t, &yt) in y.iter().enumerate() {
        let shift = if t + 1 < n {
            lambda * (1.0 - g)
        } else {
            lambda
        };
        v.push(yt - shift);
        w.push(1.0);
        start.push(t);
        len.push(1);
        while v.len() > 1 {
            let i = v.len() - 2;
            if v[i] * gp[len[i]] + s_min <= v[i + 1] {
                break;
            }
            let l1 = len[i];
            let w_new = w[i] + gp[l1] * gp[l1] * w[i + 1];
            v[i] = (v[i] * w[i] + gp[l1] * v[i + 1] * w[i + 1]) / w_new;
            w[i] = w_new;
            len[i] += len[i + 1];
            v.pop();
            w.pop();
            start.pop();
            len.pop();
        }
    }
    let mut c = vec![0.0f64; n];
    for i in 0..v.len() {
        let v0 = v[i].max(0.0);
        for k in 0..len[i] {
            c[start[i] + k] = v0 * gp[k];
        }
    }
    let mut s = vec![0.0f64; n];
    s[0] = c[0];
    for t in 1..n {
        s[t] = (c[t] - g * c[t - 1]).max(0.0);
    }
    (c, s)
}

/// Least-squares AR(1) coefficient from the autocovariance at lags 1..=`lags`.
pub fn estimate_gamma(y: &[f64], lags: usize) -> f64 {
    let n = y.len();
    if n < lags + 3 {
        return 0.0;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let acov = |k: usize| {
        (0..n - k)
            .map(|t| (y[t] - mean) * (y[t + k] - mean))
            .sum::<f64>()
            / (n - k) as f64
    };
    let c: Vec<f64> = (1..=lags + 1).map(acov).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for k in 0..lags {
        num += c[k] * c[k + 1];
        den += c[k] * c[k];
    }
    if den <= 0.0 {
        0.0
    } else {
        (num / den).clamp(0.0, 0.999)
    }
}

fn percentile_of_smoothed(y: &[f64], window: usize, q: f64) -> f64 {
    let n = y.len();
    let half = window / 2;
    let mut prefix = vec![0.0f64; n + 1];
    for t in 0..n {
        prefix[t + 1] = prefix[t] + y[t];
    }
    let mut sm: Vec<f64> = (0..n)
        .map(|t| {
            let (a, b) = (t.saturating_sub(half), (t + half + 1).min(n));
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect();
    sm.sort_by(f64::total_cmp);
    sm[((n - 1) as f64 * q).round() as usize]
}

/// Infers spikes in one fluorescence trace sampled at `frame_rate_hz` (see the module docs).
pub fn deconvolve(
    trace: &[f32],
    frame_rate_hz: f64,
    params: &OasisParams,
) -> Result<Deconvolved, KernelError> {
    if trace.len() < 8 {
        return Err(KernelError::Shape(format!(
            "deconvolution needs at least 8 frames, got {}",
            trace.len()
        )));
    }
    if !(frame_rate_hz > 0.0 && frame_rate_hz.is_finite()) {
        return Err(KernelError::InvalidParameter {
            name: "frame_rate_hz",
            reason: format!("must be positive, got {frame_rate_hz}"),
        });
    }
    if trace.iter().any(|v| !v.is_finite()) {
        return Err(KernelError::InvalidParameter {
            name: "trace",
            reason: "contains NaN or infinite values".into(),
        });
    }
    let y: Vec<f64> = trace.iter().map(|&v| f64::from(v)).collect();
    let noise = noise_fft(trace, PsdAverage::Mean);
    let window = ((0.2 * frame_rate_hz).round() as usize).max(1);
    let baseline = params
        .baseline
        .unwrap_or_else(|| percentile_of_smoothed(&y, window, 0.1));
    let yb: Vec<f64> = y.iter().map(|v| v - baseline).collect();
    let gamma = match (params.gamma, params.decay_s) {
        (Some(g), _) => g,
        (None, Some(tau)) => (-1.0 / (tau * frame_rate_hz)).exp(),
        (None, None) => estimate_gamma(&yb, 10),
    };
    if !(0.0..1.0).contains(&gamma) {
        return Err(KernelError::InvalidParameter {
            name: "gamma",
            reason: format!("must lie in [0, 1), got {gamma}"),
        });
    }
    let rss = |lambda: f64| {
        let (c, _) = oasis_ar1(&yb, gamma, lambda, params.s_min);
        c.iter().zip(&yb).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
    };
    let lambda = match params.lambda {
        Some(l) => l,
        None => {
            let target = noise * noise * yb.len() as f64;
            if rss(0.0) >= target {
                0.0
            } else {
                let mut hi = yb
                    .iter()
                    .cloned()
                    .fold(0.0f64, f64::max)
                    .max(noise)
                    .max(1e-12);
                while rss(hi) < target && hi < 1e12 {
                    hi *= 2.0;
                }
                let mut lo = 0.0;
                for _ in 0..40 {
                    let mid = 0.5 * (lo + hi);
                    if rss(mid) < target {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                0.5 * (lo + hi)
            }
        }
    };
    let (c, s) = oasis_ar1(&yb, gamma, lambda, params.s_min);
    Ok(Deconvolved {
        calcium: c.iter().map(|&v| v as f32).collect(),
        spikes: s.iter().map(|&v| v as f32).collect(),
        baseline,
        gamma,
        noise,
        lambda,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Slow reference: coordinate descent on the spikes of `c = K s` (K_{t,j} = g^{t-j}), s >= 0,
    /// objective 1/2 ||K s - y||^2 + lambda sum(s).
    #[allow(clippy::needless_range_loop)] // written as the formula reads
    fn reference(y: &[f64], g: f64, lambda: f64) -> Vec<f64> {
        let n = y.len();
        let k = |t: usize, j: usize| if t >= j { g.powi((t - j) as i32) } else { 0.0 };
        let mut s = vec![0.0f64; n];
        let mut c = vec![0.0f64; n];
        for _ in 0..20_000 {
            for j in 0..n {
                let (mut num, mut den) = (0.0, 0.0);
                for t in j..n {
                    let r = y[t] - (c[t] - k(t, j) * s[j]);
                    num += k(t, j) * r;
                    den += k(t, j) * k(t, j);
                }
                let new = ((num - lambda) / den).max(0.0);
                let d = new - s[j];
                if d != 0.0 {
                    for t in j..n {
                        c[t] += k(t, j) * d;
                    }
                    s[j] = new;
                }
            }
        }
        c
    }

    fn objective(c: &[f64], y: &[f64], g: f64, lambda: f64) -> f64 {
        let fit: f64 = c.iter().zip(y).map(|(a, b)| 0.5 * (a - b).powi(2)).sum();
        let l1: f64 = c[0] + (1..c.len()).map(|t| c[t] - g * c[t - 1]).sum::<f64>();
        fit + lambda * l1
    }

    #[test]
    fn oasis_matches_a_slow_solver() {
        let mut r = Rng::new(12, 0);
        for trial in 0..6 {
            let g = [0.0, 0.5, 0.9, 0.95, 0.8, 0.7][trial];
            let lambda = [0.0, 0.3, 0.1, 1.0, 0.0, 2.0][trial];
            let mut c = 0.0;
            let y: Vec<f64> = (0..40)
                .map(|_| {
                    c = g * c + if r.uniform() < 0.1 { 3.0 } else { 0.0 };
                    c + 0.5 * r.normal()
                })
                .collect();
            let (fast, s) = oasis_ar1(&y, g, lambda, 0.0);
            let slow = reference(&y, g, lambda);
            let (of, os) = (
                objective(&fast, &y, g, lambda),
                objective(&slow, &y, g, lambda),
            );
            assert!(
                of <= os + 1e-6,
                "trial {trial}: oasis {of} vs reference {os}"
            );
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-3, "trial {trial}: {a} vs {b}");
            }
            assert!(s.iter().all(|&v| v >= 0.0));
        }
    }

    #[test]
    fn recovers_simulated_spikes_and_time_constant() {
        let mut r = Rng::new(3, 0);
        let (rate, tau) = (30.0, 0.5);
        let g = (-1.0f64 / (tau * rate)).exp();
        let mut c = 0.0;
        let mut truth = Vec::new();
        let trace: Vec<f32> = (0..6000)
            .map(|_| {
                let s = r.poisson(0.02);
                truth.push(s as f32);
                c = g * c + s;
                (100.0 + 20.0 * c + 2.0 * r.normal()) as f32
            })
            .collect();
        let d = deconvolve(&trace, rate, &OasisParams::default()).unwrap();
        assert!((d.gamma - g).abs() < 0.02, "gamma {} vs {g}", d.gamma);
        // Instantaneous rises put some spike power above 0.25 cycles/frame: the PSD estimate of the
        // noise runs high on such traces (real indicators rise over several frames at 30 Hz).
        assert!((1.8..2.8).contains(&d.noise), "noise {}", d.noise);
        assert!((d.baseline - 100.0).abs() < 3.0, "baseline {}", d.baseline);
        let corr = crate::metrics::spike_rate_correlation(
            ndarray::ArrayView1::from(&truth),
            ndarray::ArrayView1::from(&d.spikes),
            rate,
            0.1,
        );
        assert!(corr > 0.9, "spike-rate correlation {corr}");
    }

    #[test]
    fn bad_traces_are_refused() {
        assert!(deconvolve(&[1.0; 4], 30.0, &OasisParams::default()).is_err());
        let mut t = vec![1.0f32; 100];
        t[7] = f32::NAN;
        assert!(deconvolve(&t, 30.0, &OasisParams::default()).is_err());
        assert!(deconvolve(&[1.0; 100], 0.0, &OasisParams::default()).is_err());
        let p = OasisParams {
            gamma: Some(1.5),
            ..OasisParams::default()
        };
        assert!(deconvolve(&[1.0; 100], 30.0, &p).is_err());
    }
}
