//! Summary statistics of a movie that add up across time chunks, and per-pixel noise.
//!
//! [`SummaryStats`] holds per-pixel sufficient statistics (count, sum, sum of squares, min, max,
//! saturated count) for a block of frames; two blocks combine with [`SummaryStats::merge`], so a
//! recording can be summarised chunk by chunk, in any order, by any number of workers, with the
//! same result up to floating-point reassociation (sums are accumulated in f64).
//!
//! [`noise_fft`] estimates the noise standard deviation of a trace from the high-frequency half of its
//! power spectrum, following CaImAn's `get_noise_fft` (Pnevmatikakis et al. 2016): calcium signals
//! live at low frequencies, so the power between 0.25 and 0.5 cycles/frame is (nearly) all noise.

use std::sync::Arc;

use ndarray::{Array2, ArrayView3, Axis, Zip};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::KernelError;

/// Per-pixel sufficient statistics over a set of frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryStats {
    pub frames: u64,
    pub sum: Array2<f64>,
    pub sum_sq: Array2<f64>,
    pub min: Array2<f32>,
    pub max: Array2<f32>,
    /// Number of samples at or above the saturation level, per pixel.
    pub saturated: Array2<u64>,
}

impl SummaryStats {
    /// Statistics of `movie` (t, y, x); samples `>= saturation` count as saturated.
    pub fn from_movie(movie: ArrayView3<f32>, saturation: Option<f32>) -> SummaryStats {
        let (t, h, w) = movie.dim();
        let mut s = SummaryStats::empty(h, w);
        s.frames = t as u64;
        let sat = saturation.unwrap_or(f32::INFINITY);
        for frame in movie.axis_iter(Axis(0)) {
            Zip::from(&mut s.sum)
                .and(&mut s.sum_sq)
                .and(&mut s.min)
                .and(&mut s.max)
                .and(&mut s.saturated)
                .and(&frame)
                .for_each(|sum, sq, mn, mx, st, &v| {
                    let x = f64::from(v);
                    *sum += x;
                    *sq += x * x;
                    *mn = mn.min(v);
                    *mx = mx.max(v);
                    if v >= sat {
                        *st += 1;
                    }
                });
        }
        s
    }

    /// Statistics of zero frames (the identity of [`SummaryStats::merge`]).
    pub fn empty(height: usize, width: usize) -> SummaryStats {
        SummaryStats {
            frames: 0,
            sum: Array2::zeros((height, width)),
            sum_sq: Array2::zeros((height, width)),
            min: Array2::from_elem((height, width), f32::INFINITY),
            max: Array2::from_elem((height, width), f32::NEG_INFINITY),
            saturated: Array2::zeros((height, width)),
        }
    }

    /// Combines statistics of two disjoint sets of frames of the same field.
    pub fn merge(mut self, other: &SummaryStats) -> Result<SummaryStats, KernelError> {
        if self.sum.dim() != other.sum.dim() {
            return Err(KernelError::Shape(format!(
                "cannot merge statistics of fields {:?} and {:?}",
                self.sum.dim(),
                other.sum.dim()
            )));
        }
        self.frames += other.frames;
        self.sum += &other.sum;
        self.sum_sq += &other.sum_sq;
        Zip::from(&mut self.min)
            .and(&other.min)
            .for_each(|a, &b| *a = a.min(b));
        Zip::from(&mut self.max)
            .and(&other.max)
            .for_each(|a, &b| *a = a.max(b));
        self.saturated += &other.saturated;
        Ok(self)
    }

    /// Mean image `sum / n`.
    pub fn mean(&self) -> Array2<f32> {
        let n = self.frames.max(1) as f64;
        self.sum.mapv(|s| (s / n) as f32)
    }

    /// Per-pixel standard deviation over time (population, `sqrt(E[x^2] - E[x]^2)`).
    pub fn std(&self) -> Array2<f32> {
        let n = self.frames.max(1) as f64;
        Zip::from(&self.sum)
            .and(&self.sum_sq)
            .map_collect(|&s, &q| ((q / n - (s / n).powi(2)).max(0.0)).sqrt() as f32)
    }

    /// Fraction of all samples at or above the saturation level.
    pub fn saturated_fraction(&self) -> f64 {
        let total = self.frames as f64 * self.sum.len() as f64;
        if total == 0.0 {
            return 0.0;
        }
        self.saturated.iter().sum::<u64>() as f64 / total
    }
}

/// Median of the finite values of `v` (mean of the two middle ones for an even count), `None`
/// when there are none. Reorders `v`.
pub fn median(v: &mut Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    })
}

/// How [`noise_fft`] averages the power spectral density over the noise band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PsdAverage {
    /// `sqrt(mean(psd / 2))`: unbiased for white noise (tessera's default).
    #[default]
    Mean,
    /// `sqrt(median(psd / 2))`: robust to narrow-band peaks; biased low by `sqrt(ln 2)` for
    /// white noise.
    Median,
    /// `sqrt(exp(mean(log(psd / 2))))`: CaImAn's default; biased low by `exp(-gamma / 2) = 0.749`
    /// for white noise (the mean of the log of an exponential variable is `log(mean) - gamma`).
    LogMeanExp,
}

/// Noise standard deviation of `trace` from its power spectrum over `(0.25, 0.5]` cycles/sample:
///
/// ```text
/// psd_k = 2 / T * |sum_t y_t e^{-2 pi i k t / T}|^2  for k / T in (0.25, 0.5]
/// sigma = sqrt(average_k(psd_k / 2))
/// ```
///
/// For white noise of variance `s^2`, `E[psd_k / 2] = s^2`. Traces longer than 3072 samples are
/// reduced, as in CaImAn, to three 1024-sample segments (start, middle, end). Returns 0 for traces
/// shorter than 8 samples.
pub fn noise_fft(trace: &[f32], average: PsdAverage) -> f64 {
    NoiseEstimator::new(trace.len()).estimate(trace, average)
}

/// A reusable [`noise_fft`] for many traces of one length (one FFT plan).
#[derive(Clone)]
pub struct NoiseEstimator {
    len: usize,
    fft: Option<Arc<dyn Fft<f64>>>,
}

impl std::fmt::Debug for NoiseEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseEstimator")
            .field("len", &self.len)
            .finish()
    }
}

const MAX_FFT_SAMPLES: usize = 3072;

impl NoiseEstimator {
    /// Plans the FFT for traces of `len` samples.
    pub fn new(len: usize) -> NoiseEstimator {
        let n = len.min(MAX_FFT_SAMPLES);
        let fft = (n >= 8).then(|| FftPlanner::new().plan_fft_forward(n));
        NoiseEstimator { len, fft }
    }

    /// The estimate for one trace of the planned length (see [`noise_fft`]).
    pub fn estimate(&self, trace: &[f32], average: PsdAverage) -> f64 {
        self.estimate_with(trace, average, &mut NoiseScratch::default())
    }

    /// [`Self::estimate`] with buffers reused across traces.
    pub fn estimate_with(&self, trace: &[f32], average: PsdAverage, s: &mut NoiseScratch) -> f64 {
        let Some(fft) = &self.fft else { return 0.0 };
        if trace.len() != self.len {
            return NoiseEstimator::new(trace.len()).estimate(trace, average);
        }
        s.buf.clear();
        s.buf
            .extend(subsample(trace).map(|v| Complex::new(f64::from(v), 0.0)));
        let n = s.buf.len();
        s.fft
            .resize(fft.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
        fft.process_with_scratch(&mut s.buf, &mut s.fft);
        s.half_psd.clear();
        s.half_psd
            .extend(noise_band(n).map(|k| s.buf[k].norm_sqr() / n as f64)); // (2 / T |X|^2) / 2
        average_psd(&mut s.half_psd, average)
    }

    /// [`Self::estimate_with`] of two traces with one complex FFT: `z = a + i b`, then
    /// `A(k) = (Z(k) + conj Z(n - k)) / 2` and `B(k) = (Z(k) - conj Z(n - k)) / 2i` (the spectra of
    /// real signals are Hermitian). The same estimates as one trace at a time, to rounding.
    pub fn estimate_pair_with(
        &self,
        a: &[f32],
        b: &[f32],
        average: PsdAverage,
        s: &mut NoiseScratch,
    ) -> (f64, f64) {
        let Some(fft) = &self.fft else {
            return (0.0, 0.0);
        };
        if a.len() != self.len || b.len() != self.len {
            return (
                self.estimate_with(a, average, s),
                self.estimate_with(b, average, s),
            );
        }
        s.buf.clear();
        s.buf.extend(
            subsample(a)
                .zip(subsample(b))
                .map(|(x, y)| Complex::new(f64::from(x), f64::from(y))),
        );
        let n = s.buf.len();
        s.fft
            .resize(fft.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
        fft.process_with_scratch(&mut s.buf, &mut s.fft);
        s.half_psd.clear();
        s.other_psd.clear();
        for k in noise_band(n) {
            let (zk, zm) = (s.buf[k], s.buf[(n - k) % n].conj());
            let (fa, d) = ((zk + zm) * 0.5, (zk - zm) * 0.5);
            s.half_psd.push(fa.norm_sqr() / n as f64);
            // |(zk - zm) / 2i| = |(zk - zm) / 2|
            s.other_psd.push(d.norm_sqr() / n as f64);
        }
        (
            average_psd(&mut s.half_psd, average),
            average_psd(&mut s.other_psd, average),
        )
    }
}

/// Buffers for [`NoiseEstimator::estimate_with`].
#[derive(Debug, Default, Clone)]
pub struct NoiseScratch {
    buf: Vec<Complex<f64>>,
    fft: Vec<Complex<f64>>,
    half_psd: Vec<f64>,
    other_psd: Vec<f64>,
}

/// The frequency bins `k` of an `n`-point transform with `k / n` in `(0.25, 0.5]`.
fn noise_band(n: usize) -> impl Iterator<Item = usize> {
    (0..=n / 2).filter(move |&k| {
        let f = k as f64 / n as f64;
        f > 0.25 && f <= 0.5
    })
}

fn subsample(trace: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let t = trace.len();
    let (a, b, c): (&[f32], &[f32], &[f32]) = if t > MAX_FFT_SAMPLES {
        let third = MAX_FFT_SAMPLES / 3;
        let mid = t / 2 - third / 2;
        (
            &trace[1..third + 1],
            &trace[mid..mid + third],
            &trace[t - third..],
        )
    } else {
        (trace, &[], &[])
    };
    a.iter().chain(b).chain(c).copied()
}

fn average_psd(half_psd: &mut [f64], average: PsdAverage) -> f64 {
    if half_psd.is_empty() {
        return 0.0;
    }
    let n = half_psd.len() as f64;
    let v = match average {
        PsdAverage::Mean => half_psd.iter().sum::<f64>() / n,
        PsdAverage::Median => {
            half_psd.sort_by(f64::total_cmp);
            half_psd[half_psd.len() / 2]
        }
        PsdAverage::LogMeanExp => {
            (half_psd.iter().map(|p| (p + 1e-10).ln()).sum::<f64>() / n).exp()
        }
    };
    v.sqrt()
}

/// Per-pixel noise image of a movie (t, y, x), parallel over rows. Each task copies its row's
/// traces out of the frames first (contiguous runs of a frame, not one strided read per sample),
/// then estimates them two per FFT ([`NoiseEstimator::estimate_pair_with`]).
pub fn noise_image(movie: ArrayView3<f32>, average: PsdAverage) -> Array2<f32> {
    let (t, h, w) = movie.dim();
    let est = NoiseEstimator::new(t);
    let rows: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map_init(
            || (NoiseScratch::default(), Vec::new()),
            |(scratch, traces), y| {
                // One buffer of the row's traces per thread, reused row after row (a fresh one per
                // row is a fresh mmap and its page faults once a row of traces passes 1 MiB, e.g.
                // 512 px x 3000 frames); every element is written before it is read.
                if traces.len() != w * t {
                    traces.clear();
                    traces.resize(w * t, 0.0f32);
                }
                match movie.as_slice() {
                    // Each frame's row read whole and scattered to the traces (one write per trace;
                    // consecutive frames land in the same cache lines).
                    Some(src) => {
                        for ti in 0..t {
                            let row = &src[(ti * h + y) * w..(ti * h + y + 1) * w];
                            for (x, &v) in row.iter().enumerate() {
                                traces[x * t + ti] = v;
                            }
                        }
                    }
                    None => {
                        for ti in 0..t {
                            for (x, &v) in movie.slice(ndarray::s![ti, y, ..]).iter().enumerate() {
                                traces[x * t + ti] = v;
                            }
                        }
                    }
                }
                let mut row = Vec::with_capacity(w);
                let mut pairs = traces.chunks_exact(t.max(1)).take(w);
                while let Some(a) = pairs.next() {
                    match pairs.next() {
                        Some(b) => {
                            let (na, nb) = est.estimate_pair_with(a, b, average, scratch);
                            row.extend([na as f32, nb as f32]);
                        }
                        None => row.push(est.estimate_with(a, average, scratch) as f32),
                    }
                }
                row
            },
        )
        .collect();
    Array2::from_shape_fn((h, w), |(y, x)| rows[y].get(x).copied().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use ndarray::Array3;

    /// Slow reference: the DFT written out, same band and averaging.
    fn noise_reference(trace: &[f32]) -> f64 {
        let y: Vec<f64> = subsample(trace).map(f64::from).collect();
        let n = y.len();
        let mut acc = Vec::new();
        for k in 0..=n / 2 {
            let f = k as f64 / n as f64;
            if !(f > 0.25 && f <= 0.5) {
                continue;
            }
            let (mut re, mut im) = (0.0, 0.0);
            for (t, v) in y.iter().enumerate() {
                let ph = -2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                re += v * ph.cos();
                im += v * ph.sin();
            }
            acc.push((re * re + im * im) / n as f64);
        }
        (acc.iter().sum::<f64>() / acc.len() as f64).sqrt()
    }

    fn noisy_trace(len: usize, sigma: f64, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed, 0);
        (0..len)
            .map(|t| (100.0 + 20.0 * (t as f64 / 50.0).sin() + sigma * r.normal()) as f32)
            .collect()
    }

    #[test]
    fn fft_matches_the_reference_dft() {
        for len in [97, 512, 5000] {
            let tr = noisy_trace(len, 2.0, len as u64);
            let fast = noise_fft(&tr, PsdAverage::Mean);
            let slow = noise_reference(&tr);
            assert!((fast - slow).abs() < 1e-6 * slow, "{len}: {fast} vs {slow}");
        }
    }

    #[test]
    fn recovers_white_noise_sigma_under_slow_signal() {
        let tr = noisy_trace(3000, 3.0, 5);
        let mean = noise_fft(&tr, PsdAverage::Mean);
        assert!((mean / 3.0 - 1.0).abs() < 0.05, "mean {mean}");
        let lme = noise_fft(&tr, PsdAverage::LogMeanExp);
        let expected = 3.0 * (-0.5772156649f64 / 2.0).exp();
        assert!(
            (lme / expected - 1.0).abs() < 0.06,
            "logmexp {lme} vs {expected}"
        );
        assert_eq!(noise_fft(&tr[..4], PsdAverage::Mean), 0.0);
    }

    #[test]
    fn summary_stats_merge_equals_whole() {
        let mut r = Rng::new(3, 0);
        let movie = Array3::from_shape_fn((20, 5, 6), |_| r.range(0.0, 100.0) as f32);
        let whole = SummaryStats::from_movie(movie.view(), Some(95.0));
        let a = SummaryStats::from_movie(movie.slice(ndarray::s![..7, .., ..]), Some(95.0));
        let b = SummaryStats::from_movie(movie.slice(ndarray::s![7.., .., ..]), Some(95.0));
        let merged = SummaryStats::empty(5, 6)
            .merge(&b)
            .unwrap()
            .merge(&a)
            .unwrap();
        assert_eq!(merged.frames, 20);
        assert_eq!(merged.min, whole.min);
        assert_eq!(merged.max, whole.max);
        assert_eq!(merged.saturated, whole.saturated);
        for (x, y) in merged.sum.iter().zip(&whole.sum) {
            assert!((x - y).abs() < 1e-9);
        }
        let expected_sat = movie.iter().filter(|&&v| v >= 95.0).count() as f64 / 600.0;
        assert!((whole.saturated_fraction() - expected_sat).abs() < 1e-12);
        let m = whole.mean();
        let direct = movie.mean_axis(Axis(0)).unwrap();
        for (x, y) in m.iter().zip(&direct) {
            assert!((x - y).abs() < 1e-3);
        }
        assert!(SummaryStats::empty(2, 2).merge(&whole).is_err());
    }

    #[test]
    fn noise_image_matches_per_pixel_estimates() {
        // Traces go two per FFT: an odd width leaves one alone; a long movie is subsampled.
        let mut r = Rng::new(9, 0);
        for (t, w) in [(256, 4), (257, 5), (3500, 3)] {
            let movie = Array3::from_shape_fn((t, 3, w), |(ti, y, x)| {
                let slow = (ti as f64 * 0.01 * (x as f64 + 1.0)).sin();
                (10.0 + 5.0 * slow + (y as f64 + 1.0) * r.normal()) as f32
            });
            for average in [PsdAverage::Mean, PsdAverage::Median, PsdAverage::LogMeanExp] {
                let img = noise_image(movie.view(), average);
                for y in 0..3 {
                    for x in 0..w {
                        let tr: Vec<f32> = movie.slice(ndarray::s![.., y, x]).to_vec();
                        let want = noise_fft(&tr, average);
                        let got = f64::from(img[[y, x]]);
                        assert!(
                            (got - want).abs() <= 1e-6 * want,
                            "{t}x{w} ({y}, {x}): {got} vs {want}"
                        );
                        if average == PsdAverage::Mean {
                            assert!((got / (y as f64 + 1.0) - 1.0).abs() < 0.25);
                        }
                    }
                }
            }
            // A strided view (every other column) gives the same estimates as its columns.
            let strided = movie.slice(ndarray::s![.., .., ..;2]);
            let img = noise_image(strided, PsdAverage::Mean);
            for ((y, x), &got) in img.indexed_iter() {
                let tr: Vec<f32> = strided.slice(ndarray::s![.., y, x]).to_vec();
                let want = noise_fft(&tr, PsdAverage::Mean);
                assert!((f64::from(got) - want).abs() <= 1e-6 * want);
            }
        }
    }
}
