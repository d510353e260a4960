//! Motion correction.
//!
//! Rigid registration by phase correlation (Kuglin & Hines 1975), as Suite2p does it (Pachitariu et
//! al. 2017, `registration/rigid.py`):
//!
//! ```text
//! frame'   = taper(frame)                     edges blended into the mean (no wrap-around edges)
//! R(k)     = F'(k) / |F'(k)| * conj(T(k)) / |T(k)| * G_sigma(k)   whitened cross-power spectrum,
//!                                                                 smoothed by a Gaussian (sigma 1.15 px)
//! c(d)     = IFFT(R)(d),  d* = argmax_{|d| <= max_shift} c(d)
//! d_sub    = d* + parabolic vertex of c along each axis through d*
//! ```
//!
//! `d` is the displacement of the frame's content relative to the template (frame(x) ~ T(x - d)),
//! so the registered frame is `frame(x + d)` ([`shift_frame`]). The template is built as in Suite2p:
//! the frame whose 20 best-correlated frames (among up to 200 evenly spaced ones) correlate best, the
//! mean of those, then refined by registering the sample to it and averaging the best-matching
//! frames, a few times.

mod fft2;
mod piecewise;

pub use fft2::{Fft2, Fft2Scratch};
pub use piecewise::{PiecewiseParams, PiecewiseRegistration, PiecewiseShift};

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::KernelError;
use crate::vector::dot;

/// Parameters of rigid registration (defaults follow Suite2p).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RigidParams {
    /// Largest shift searched, in pixels (Suite2p: 10% of the field; SCIENCE.md: ~10 um).
    pub max_shift_px: f64,
    /// Gaussian smoothing of the correlation map, in pixels.
    pub smooth_sigma: f64,
    /// Frames sampled (evenly) to build the template.
    pub template_frames: usize,
    /// Frames averaged in the initial template.
    pub seed_frames: usize,
    /// Refinement passes of the template.
    pub iterations: usize,
}

impl Default for RigidParams {
    fn default() -> Self {
        RigidParams {
            max_shift_px: 15.0,
            smooth_sigma: 1.15,
            template_frames: 200,
            seed_frames: 20,
            iterations: 3,
        }
    }
}

/// The shift estimated for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameShift {
    /// Displacement of the frame's content relative to the template, rows then columns.
    pub dy: f32,
    pub dx: f32,
    /// Height of the phase-correlation peak (higher is more confident).
    pub peak: f32,
    /// True when the best shift lies on the search limit (the true motion may be larger).
    pub clipped: bool,
}

/// A template, prepared for phase correlation against frames of its shape.
#[derive(Debug, Clone)]
pub struct RigidRegistration {
    params: RigidParams,
    template: Array2<f32>,
    fft: Fft2,
    /// conj(T) / |T| * G, ready to multiply, column-major (`[kx * h + ky]`).
    reference: Vec<Complex32>,
    taper: Array2<f32>,
    fill: f32,
    /// The rows and columns of the cross-correlation the peak search reads: displacements
    /// `-r..=r` with `r = floor(max shift) + 1`, wrapped.
    window_ys: Vec<usize>,
    window_xs: Vec<usize>,
}

thread_local! {
    /// Each thread's buffers for [`RigidRegistration::estimate_all`], kept between calls:
    /// `tessera register` estimates one chunk row of frames per call, and buffers made afresh for
    /// every call (three frame-sized complex arrays, 6 MiB at 512 x 512) were new mmaps whose pages
    /// faulted in again at every row. `estimate_pair` starts no parallel work, so the borrow is
    /// never re-entered.
    static SHIFT_SCRATCH: std::cell::RefCell<ShiftScratch> =
        std::cell::RefCell::new(ShiftScratch::default());
}

/// Buffers for estimating shifts, reused across frames (one per thread).
#[derive(Debug, Default, Clone)]
pub struct ShiftScratch {
    packed: Vec<Complex32>,
    spectrum: Vec<Complex32>,
    white: Vec<Complex32>,
    window: Vec<Complex32>,
    fft: Fft2Scratch,
}

/// Sigmoid taper: 1 in the interior, falling to 0 over `width` pixels at the edges (Suite2p's
/// `spatial_taper`).
fn taper_mask(h: usize, w: usize, width: f32) -> Array2<f32> {
    let f = |i: usize, n: usize| {
        let d = (i as f32).min((n - 1 - i) as f32);
        1.0 / (1.0 + (-(d - width) / (width / 4.0).max(0.5)).exp())
    };
    Array2::from_shape_fn((h, w), |(y, x)| f(y, h) * f(x, w))
}

impl RigidRegistration {
    /// Prepares `template` (h x w, at least 16 x 16).
    pub fn new(
        template: Array2<f32>,
        params: RigidParams,
    ) -> Result<RigidRegistration, KernelError> {
        let (h, w) = template.dim();
        if h < 16 || w < 16 {
            return Err(KernelError::Shape(format!(
                "registration needs frames of at least 16x16, got {h}x{w}"
            )));
        }
        if !(params.max_shift_px >= 0.0 && params.smooth_sigma >= 0.0) {
            return Err(KernelError::InvalidParameter {
                name: "max_shift_px",
                reason: "must be >= 0".into(),
            });
        }
        let fft = Fft2::new(h, w);
        let fill = template.mean().unwrap_or(0.0);
        let taper = taper_mask(h, w, (h.min(w) as f32 / 20.0).max(3.0));
        let tapered = tapered(&template.view(), &taper, fill);
        let spec = fft.forward(&tapered);
        let sigma = params.smooth_sigma;
        let reference = (0..h * w)
            .map(|i| {
                let (kx, ky) = (i / h, i % h);
                let c = spec[ky * w + kx];
                // Frequencies in cycles per pixel, wrapped to [-0.5, 0.5).
                let fy = if ky <= h / 2 {
                    ky as f64
                } else {
                    ky as f64 - h as f64
                } / h as f64;
                let fx = if kx <= w / 2 {
                    kx as f64
                } else {
                    kx as f64 - w as f64
                } / w as f64;
                let g = (-2.0 * std::f64::consts::PI.powi(2) * sigma * sigma * (fy * fy + fx * fx))
                    .exp() as f32;
                c.conj() / (c.norm() + 1e-5) * g
            })
            .collect();
        let mut reg = RigidRegistration {
            params,
            template,
            fft,
            reference,
            taper,
            fill,
            window_ys: Vec::new(),
            window_xs: Vec::new(),
        };
        let r = reg.max_shift_px().floor() as isize + 1;
        let wrap = |n: usize| {
            (-r..=r)
                .map(|d| d.rem_euclid(n as isize) as usize)
                .collect()
        };
        reg.window_ys = wrap(h);
        reg.window_xs = wrap(w);
        Ok(reg)
    }

    /// Builds the template from a movie (t, y, x) and prepares it.
    pub fn from_movie(
        frames: ArrayView3<f32>,
        params: RigidParams,
    ) -> Result<RigidRegistration, KernelError> {
        let template = build_template(frames, &params)?;
        RigidRegistration::new(template, params)
    }

    /// The largest shift searched: `max_shift_px`, capped at half the smaller side of the field
    /// minus one.
    pub fn max_shift_px(&self) -> f64 {
        let (h, w) = self.template.dim();
        self.params
            .max_shift_px
            .min((h.min(w) / 2 - 1) as f64)
            .max(0.0)
    }

    /// The template frames are registered to.
    /// The same registration with its template moved to the median position of `shifts` (frames
    /// whose shift hit the limit are left out unless all did). Registering against it puts every
    /// frame where the field sits most of the time, so the registered movie keeps the recording's
    /// own pixel frame instead of that of whichever frames seeded the template.
    pub fn recentred(&self, shifts: &[FrameShift]) -> Result<RigidRegistration, KernelError> {
        let (dy, dx) = median_shift(shifts);
        if dy == 0.0 && dx == 0.0 {
            return Ok(self.clone());
        }
        // `shift_frame` removes a displacement: removing -(dy, dx) moves the content by +(dy, dx).
        RigidRegistration::new(
            shift_frame(self.template().view(), -dy, -dx),
            self.params.clone(),
        )
    }

    pub fn template(&self) -> &Array2<f32> {
        &self.template
    }

    /// Shift of one frame relative to the template.
    pub fn estimate(&self, frame: ArrayView2<f32>) -> FrameShift {
        self.estimate_pair(frame, frame, &mut ShiftScratch::default())
            .0
    }

    /// Shifts of two frames with one complex FFT each way: the tapered frames are packed as the
    /// real and imaginary parts of `z = a + i b`; their spectra are separated by Hermitian
    /// symmetry, `A(k) = (Z(k) + conj Z(-k)) / 2`, `B(k) = (Z(k) - conj Z(-k)) / 2i`, whitened
    /// against the reference, and packed again as `A' + i B'`, whose inverse has the two
    /// cross-correlations as its real and imaginary parts. Only the part of the inverse within the
    /// search window is computed ([`Fft2::inverse_window`]). The same shifts as one frame at a time
    /// with full transforms, to rounding (tests: `reference_estimate`).
    pub fn estimate_pair(
        &self,
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        s: &mut ShiftScratch,
    ) -> (FrameShift, FrameShift) {
        crate::vector::avx2(
            #[inline(always)]
            || self.estimate_pair_portable(a, b, s),
        )
    }

    #[inline(always)]
    fn estimate_pair_portable(
        &self,
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        s: &mut ShiftScratch,
    ) -> (FrameShift, FrameShift) {
        let (h, w) = self.template.dim();
        s.packed.clear();
        s.packed.resize(h * w, Complex32::new(0.0, 0.0));
        {
            let mut z = ArrayViewMut2::from_shape((h, w), &mut s.packed[..])
                .expect("the buffer was sized to the frame");
            let fill = self.fill;
            ndarray::Zip::from(&mut z)
                .and(&a)
                .and(&b)
                .and(&self.taper)
                .for_each(|z, &va, &vb, &m| {
                    let f = fill * (1.0 - m);
                    *z = Complex32::new(va * m + f, vb * m + f);
                });
        }
        self.fft
            .forward_to_columns(&mut s.packed, &mut s.spectrum, &mut s.fft);
        let unit = |c: Complex32| c / ((c.re * c.re + c.im * c.im).sqrt() + 1e-5);
        s.white.clear();
        s.white.resize(h * w, Complex32::new(0.0, 0.0));
        for kx in 0..w {
            let mx = (w - kx) % w;
            for ky in 0..h {
                let i = kx * h + ky;
                let zk = s.spectrum[i];
                let zm = s.spectrum[mx * h + (h - ky) % h].conj();
                let d = zk - zm;
                let r = self.reference[i];
                let fa = unit((zk + zm) * 0.5) * r;
                let fb = unit(Complex32::new(d.im, -d.re) * 0.5) * r;
                s.white[i] = Complex32::new(fa.re - fb.im, fa.im + fb.re);
            }
        }
        self.fft.inverse_window(
            &mut s.white,
            &self.window_ys,
            &self.window_xs,
            &mut s.window,
            &mut s.fft,
        );
        let n = self.window_xs.len();
        let r = (n / 2) as isize;
        let norm = 1.0 / (h * w) as f32;
        let window = &s.window;
        let at = |dy: isize, dx: isize| window[((dy + r) * n as isize + dx + r) as usize] * norm;
        (
            self.peak(|dy, dx| at(dy, dx).re),
            self.peak(|dy, dx| at(dy, dx).im),
        )
    }

    /// The sub-pixel peak of a cross-correlation `at(dy, dx)` within the search disk (`at` is read
    /// for `|dy|, |dx| <= floor(max shift) + 1`).
    fn peak(&self, at: impl Fn(isize, isize) -> f32) -> FrameShift {
        let max = self.max_shift_px();
        let m = max.floor() as isize;
        let mut best = (0isize, 0isize, f32::NEG_INFINITY);
        for dy in -m..=m {
            for dx in -m..=m {
                if ((dy * dy + dx * dx) as f64) > max * max + 1e-9 && max > 0.0 {
                    continue;
                }
                let v = at(dy, dx);
                if v > best.2 {
                    best = (dy, dx, v);
                }
            }
        }
        let (by, bx, peak) = best;
        let vertex = |a: f32, b: f32, c: f32| {
            let denom = a - 2.0 * b + c;
            if denom.abs() < 1e-12 {
                0.0
            } else {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            }
        };
        let sy = vertex(at(by - 1, bx), peak, at(by + 1, bx));
        let sx = vertex(at(by, bx - 1), peak, at(by, bx + 1));
        // Clipped: the best position is on the rim of the search disk (a neighbour lies outside it).
        let outside = |y: isize, x: isize| ((y * y + x * x) as f64) > max * max + 1e-9;
        let clipped = max > 0.0 && (outside(by.abs() + 1, bx) || outside(by, bx.abs() + 1));
        FrameShift {
            dy: by as f32 + sy,
            dx: bx as f32 + sx,
            peak,
            clipped,
        }
    }

    /// Shifts of every frame, in parallel, two frames per FFT ([`Self::estimate_pair`]). Each
    /// thread keeps its buffers between calls ([`SHIFT_SCRATCH`]).
    pub fn estimate_all(&self, frames: ArrayView3<f32>) -> Vec<FrameShift> {
        let n = frames.len_of(Axis(0));
        let pairs: Vec<usize> = (0..n).step_by(2).collect();
        let per_pair: Vec<Vec<FrameShift>> = pairs
            .par_iter()
            .map(|&t| {
                SHIFT_SCRATCH.with(|scratch| {
                    let scratch = &mut scratch.borrow_mut();
                    let a = frames.index_axis(Axis(0), t);
                    if t + 1 < n {
                        let (sa, sb) =
                            self.estimate_pair(a, frames.index_axis(Axis(0), t + 1), scratch);
                        vec![sa, sb]
                    } else {
                        vec![self.estimate_pair(a, a, scratch).0]
                    }
                })
            })
            .collect();
        per_pair.into_iter().flatten().collect()
    }
}

/// `frame * taper + fill * (1 - taper)`.
fn tapered(frame: &ArrayView2<f32>, taper: &Array2<f32>, fill: f32) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(frame.dim());
    ndarray::Zip::from(&mut out)
        .and(frame)
        .and(taper)
        .for_each(|o, &v, &m| *o = v * m + fill * (1.0 - m));
    out
}

/// The registered frame `out(y, x) = frame(y + dy, x + dx)` (bilinear; edges replicated).
pub fn shift_frame(frame: ArrayView2<f32>, dy: f32, dx: f32) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(frame.dim());
    shift_frame_into(frame, dy, dx, out.view_mut());
    out
}

/// [`shift_frame`] into `out`, which must have the frame's shape (nothing is written otherwise).
pub fn shift_frame_into(frame: ArrayView2<f32>, dy: f32, dx: f32, out: ArrayViewMut2<f32>) {
    crate::vector::avx2(
        #[inline(always)]
        || shift_frame_portable(frame, dy, dx, out),
    )
}

#[inline(always)]
fn shift_frame_portable(frame: ArrayView2<f32>, dy: f32, dx: f32, mut out: ArrayViewMut2<f32>) {
    let (h, w) = frame.dim();
    if h == 0 || w == 0 || out.dim() != (h, w) {
        return;
    }
    let (iy, fy) = (dy.floor() as isize, dy - dy.floor());
    let (ix, fx) = (dx.floor() as isize, dx - dx.floor());
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    // Source columns of every output column, then one output row at a time from two source rows.
    let cols: Vec<(usize, usize)> = (0..w as isize)
        .map(|x| (clamp(x + ix, w), clamp(x + ix + 1, w)))
        .collect();
    let frame = frame.as_standard_layout();
    let src = frame.as_slice().expect("standard layout");
    for (y, mut row) in out.rows_mut().into_iter().enumerate() {
        let y = y as isize;
        let (y0, y1) = (clamp(y + iy, h), clamp(y + iy + 1, h));
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for (o, &(x0, x1)) in row.iter_mut().zip(&cols) {
            let top = r0[x0] * (1.0 - fx) + r0[x1] * fx;
            let bottom = r1[x0] * (1.0 - fx) + r1[x1] * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
    }
}

/// [`shift_frame`], but output pixels whose source `(y + dy, x + dx)` lies outside the frame take
/// `fill(y, x)` (the template, in `tessera register`) instead of replicated edge pixels: content
/// that moved out of view then reads as the field's usual brightness rather than as a streak of
/// edge values, which would fluctuate with the motion and look like activity.
pub fn shift_frame_filled(
    frame: ArrayView2<f32>,
    dy: f32,
    dx: f32,
    fill: ArrayView2<f32>,
) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(frame.dim());
    shift_frame_filled_into(frame, dy, dx, fill, out.view_mut());
    out
}

/// [`shift_frame_filled`] into `out`, which must have the frame's shape.
pub fn shift_frame_filled_into(
    frame: ArrayView2<f32>,
    dy: f32,
    dx: f32,
    fill: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
) {
    let (h, w) = frame.dim();
    shift_frame_into(frame, dy, dx, out.view_mut());
    if fill.dim() != (h, w) || out.dim() != (h, w) || !dy.is_finite() || !dx.is_finite() {
        return;
    }
    let inside = |v: f32, n: usize| v >= 0.0 && v <= (n - 1) as f32;
    let cols_out: Vec<usize> = (0..w).filter(|&x| !inside(x as f32 + dx, w)).collect();
    for (y, (mut o, f)) in out.rows_mut().into_iter().zip(fill.rows()).enumerate() {
        if inside(y as f32 + dy, h) {
            for &x in &cols_out {
                o[x] = f[x];
            }
        } else {
            o.assign(&f);
        }
    }
}

/// Frames whose shifts place the registered movie: a recording up to this long is estimated whole,
/// a longer one from this many evenly spaced frames (enough for the median position to within a
/// few hundredths of a pixel).
pub const CENTRING_FRAMES: usize = 1000;

/// Rigid registration of a whole movie `(t, y, x)` held in memory, in place, by the method of
/// `tessera register` without its second read of the recording:
///
/// ```text
/// T        = build_template(movie)                  (template_frames evenly spaced frames)
/// d_t      = shift of frame t against T              (every frame, two per FFT)
/// m        = median_t d_t                            (frames at the limit left out)
/// d'_t     = d_t - m,   T' = T moved by m            (the movie keeps the recording's own frame)
/// frame_t <- frame_t(x + d'_t), out-of-view pixels from T'
/// ```
///
/// `tessera register` instead estimates `m` on [`CENTRING_FRAMES`] frames and estimates every
/// frame again against `T'`; both give the shift against `T'`, here without interpolating the
/// template once more. Returns the registration against `T'` and the shifts `d'_t` (a frame's
/// `clipped` flag refers to the search against `T`).
pub fn register_in_place(
    mut movie: ArrayViewMut3<f32>,
    params: &RigidParams,
) -> Result<(RigidRegistration, Vec<FrameShift>), KernelError> {
    let seeded = RigidRegistration::from_movie(movie.view(), params.clone())?;
    let mut shifts = seeded.estimate_all(movie.view());
    let (my, mx) = median_shift(&shifts);
    let reg = seeded.recentred(&shifts)?;
    for s in &mut shifts {
        s.dy -= my;
        s.dx -= mx;
    }
    let template = reg.template().view();
    let dim = template.dim();
    movie
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(&shifts)
        .for_each_init(
            || Array2::<f32>::zeros(dim),
            |moved, (mut frame, s)| {
                shift_frame_filled_into(frame.view(), s.dy, s.dx, template, moved.view_mut());
                frame.assign(moved);
            },
        );
    Ok((reg, shifts))
}

/// Detection's default floor on [`in_view_fraction`]: a cell is seeded where the field was in view in
/// at least half of the frames. Lower floors seed on pixels that mostly show the fill; higher
/// ones lose the cells cut by the field's edge (with the QC r-value floor of 0.85 the edge's
/// neuropil pieces are rejected; docs/ACCURACY.md).
pub const DEFAULT_MIN_IN_VIEW: f32 = 0.5;

/// Per pixel of a registered `(h, w)` movie, the fraction of frames in which it shows recorded
/// content rather than [`shift_frame_filled`]'s fill: pixel `(y, x)` of frame `t` is in view when
/// `0 <= y + dy_t <= h - 1` and `0 <= x + dx_t <= w - 1`. Near the borders of a moving recording
/// it drops below 1; detection should not seed cells where it is low (Suite2p crops the same band).
pub fn in_view_fraction(shifts: &[(f32, f32)], h: usize, w: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((h, w));
    if shifts.is_empty() || h == 0 || w == 0 {
        out.fill(1.0);
        return out;
    }
    // Frames in view form a rectangle per frame: add them with a 2-D difference array.
    let mut diff = Array2::<i64>::zeros((h + 1, w + 1));
    let range = |d: f32, n: usize| -> Option<(usize, usize)> {
        if !d.is_finite() {
            return None;
        }
        // Smallest and largest index i with 0 <= i + d <= n - 1.
        let lo = (-d).ceil().max(0.0);
        let hi = ((n - 1) as f32 - d).floor().min((n - 1) as f32);
        (hi >= lo).then_some((lo as usize, hi as usize))
    };
    for &(dy, dx) in shifts {
        if let (Some((y0, y1)), Some((x0, x1))) = (range(dy, h), range(dx, w)) {
            diff[[y0, x0]] += 1;
            diff[[y0, x1 + 1]] -= 1;
            diff[[y1 + 1, x0]] -= 1;
            diff[[y1 + 1, x1 + 1]] += 1;
        }
    }
    for y in 0..=h {
        for x in 1..=w {
            diff[[y, x]] += diff[[y, x - 1]];
        }
    }
    for y in 1..=h {
        for x in 0..=w {
            diff[[y, x]] += diff[[y - 1, x]];
        }
    }
    let n = shifts.len() as f32;
    for ((y, x), o) in out.indexed_iter_mut() {
        *o = diff[[y, x]] as f32 / n;
    }
    out
}

/// Median `(dy, dx)` of the frames' shifts, leaving out frames whose shift hit the limit unless
/// all did; `(0, 0)` for no frames or non-finite shifts.
pub fn median_shift(shifts: &[FrameShift]) -> (f32, f32) {
    let free: Vec<&FrameShift> = shifts.iter().filter(|s| !s.clipped).collect();
    let used: Vec<&FrameShift> = if free.is_empty() {
        shifts.iter().collect()
    } else {
        free
    };
    let median = |mut v: Vec<f64>| crate::stats::median(&mut v).unwrap_or(0.0) as f32;
    (
        median(used.iter().map(|s| f64::from(s.dy)).collect()),
        median(used.iter().map(|s| f64::from(s.dx)).collect()),
    )
}

/// Suite2p-style template: seed from the best-correlated frames, then refine.
pub fn build_template(
    frames: ArrayView3<f32>,
    params: &RigidParams,
) -> Result<Array2<f32>, KernelError> {
    let (t, h, w) = frames.dim();
    if t == 0 {
        return Err(KernelError::Shape(
            "cannot build a template from zero frames".into(),
        ));
    }
    let n = params.template_frames.clamp(1, t);
    let picks: Vec<usize> = (0..n).map(|i| i * t / n).collect();
    // Correlations between sampled frames, on 2x-binned, mean-subtracted, unit-norm frames.
    let binned: Vec<Vec<f32>> = picks
        .par_iter()
        .map(|&i| {
            let f = frames.index_axis(Axis(0), i);
            let (bh, bw) = (h / 2, w / 2);
            let mut v: Vec<f32> = (0..bh * bw)
                .map(|p| {
                    let (y, x) = (2 * (p / bw), 2 * (p % bw));
                    f[[y, x]] + f[[y + 1, x]] + f[[y, x + 1]] + f[[y + 1, x + 1]]
                })
                .collect();
            let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
            let norm = v
                .iter()
                .map(|x| (x - mean) * (x - mean))
                .sum::<f32>()
                .sqrt()
                .max(1e-12);
            v.iter_mut().for_each(|x| *x = (*x - mean) / norm);
            v
        })
        .collect();
    // The upper triangle (the matrix is symmetric), then mirrored.
    let upper: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|i| (i..n).map(|j| dot(&binned[i], &binned[j])).collect())
        .collect();
    let corr: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if j >= i {
                        upper[i][j - i]
                    } else {
                        upper[j][i - j]
                    }
                })
                .collect()
        })
        .collect();
    let k = params.seed_frames.clamp(1, n);
    let top_k = |row: &Vec<f32>| {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    };
    let seed = (0..n)
        .max_by(|&a, &b| {
            let sa: f32 = top_k(&corr[a]).iter().map(|&j| corr[a][j]).sum();
            let sb: f32 = top_k(&corr[b]).iter().map(|&j| corr[b][j]).sum();
            sa.total_cmp(&sb).then(b.cmp(&a))
        })
        .unwrap_or(0);
    let mut template = Array2::<f32>::zeros((h, w));
    let members = top_k(&corr[seed]);
    for &j in &members {
        template += &frames.index_axis(Axis(0), picks[j]);
    }
    template /= members.len() as f32;
    // Refinement: register the sample, average the best-matching half of it, shifted into place.
    let sample = if params.iterations > 0 {
        frames.select(Axis(0), &picks)
    } else {
        Array3::zeros((0, h, w))
    };
    for _ in 0..params.iterations {
        let reg = RigidRegistration::new(template.clone(), params.clone())?;
        let shifts = reg.estimate_all(sample.view());
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| shifts[b].peak.total_cmp(&shifts[a].peak).then(a.cmp(&b)));
        order.truncate((n / 2).max(1));
        let shifted: Vec<Array2<f32>> = order
            .par_iter()
            .map(|&j| shift_frame(sample.index_axis(Axis(0), j), shifts[j].dy, shifts[j].dx))
            .collect();
        let mut next = Array2::<f32>::zeros((h, w));
        for f in &shifted {
            next += f;
        }
        next /= shifted.len() as f32;
        template = next;
    }
    Ok(template)
}

#[cfg(test)]
mod tests;
