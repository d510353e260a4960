//! 2-D FFTs of real images on rustfft: rows, then columns through a transpose.

use std::sync::Arc;

use ndarray::Array2;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::layout::transpose_into;

/// Planned forward and inverse 2-D transforms for images of one shape.
#[derive(Clone)]
pub struct Fft2 {
    h: usize,
    w: usize,
    row_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for Fft2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}x{})", self.h, self.w)
    }
}

fn transpose(src: &[Complex32], rows: usize, cols: usize) -> Vec<Complex32> {
    let mut dst = vec![Complex32::new(0.0, 0.0); rows * cols];
    transpose_into(src, rows, cols, &mut dst);
    dst
}

/// `buf`, sized for in-place transforms with either plan.
fn fft_scratch<'a>(
    a: &dyn Fft<f32>,
    b: &dyn Fft<f32>,
    buf: &'a mut Vec<Complex32>,
) -> &'a mut [Complex32] {
    let need = a.get_inplace_scratch_len().max(b.get_inplace_scratch_len());
    buf.resize(need, Complex32::new(0.0, 0.0));
    buf
}

/// Buffers for [`Fft2::forward_to_columns`] and [`Fft2::inverse_window`], reused across frames.
#[derive(Debug, Default, Clone)]
pub struct Fft2Scratch {
    rows: Vec<Complex32>,
    fft: Vec<Complex32>,
}

impl Fft2 {
    pub fn new(h: usize, w: usize) -> Fft2 {
        let mut p = FftPlanner::new();
        Fft2 {
            h,
            w,
            row_fwd: p.plan_fft_forward(w),
            row_inv: p.plan_fft_inverse(w),
            col_fwd: p.plan_fft_forward(h),
            col_inv: p.plan_fft_inverse(h),
        }
    }

    /// Forward transform of a real image (row-major, `h x w`), result row-major.
    pub fn forward(&self, img: &Array2<f32>) -> Vec<Complex32> {
        let mut buf: Vec<Complex32> = img.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        self.row_fwd.process(&mut buf);
        let mut t = transpose(&buf, self.h, self.w);
        self.col_fwd.process(&mut t);
        transpose(&t, self.w, self.h)
    }

    /// The 2-D transform of `buf` (row-major `h x w`, overwritten as workspace), written to `out`
    /// in column-major order: `out[kx * h + ky]`. Rows, one transpose, columns (the transpose back
    /// is left out: [`Self::inverse_window`] takes this layout).
    pub fn forward_to_columns(
        &self,
        buf: &mut [Complex32],
        out: &mut Vec<Complex32>,
        scratch: &mut Fft2Scratch,
    ) {
        let fft = fft_scratch(&*self.row_fwd, &*self.col_fwd, &mut scratch.fft);
        self.row_fwd.process_with_scratch(buf, fft);
        out.clear();
        out.resize(self.h * self.w, Complex32::new(0.0, 0.0));
        transpose_into(buf, self.h, self.w, out);
        self.col_fwd.process_with_scratch(out, fft);
    }

    /// The inverse transform (unnormalised, like rustfft) of a column-major spectrum (`spec[kx * h
    /// + ky]`, overwritten as workspace), at rows `ys` and columns `xs` only:
    /// `out[i * xs.len() + j] = f(ys[i], xs[j])`. All columns are transformed, then only the rows
    /// asked for: `w + ys.len()` 1-D transforms instead of `h + w`.
    pub fn inverse_window(
        &self,
        spec: &mut [Complex32],
        ys: &[usize],
        xs: &[usize],
        out: &mut Vec<Complex32>,
        scratch: &mut Fft2Scratch,
    ) {
        let (h, w) = (self.h, self.w);
        let fft = fft_scratch(&*self.row_inv, &*self.col_inv, &mut scratch.fft);
        self.col_inv.process_with_scratch(spec, fft);
        let rows = &mut scratch.rows;
        rows.clear();
        rows.resize(ys.len() * w, Complex32::new(0.0, 0.0));
        for (row, &y) in rows.chunks_exact_mut(w).zip(ys) {
            for (kx, r) in row.iter_mut().enumerate() {
                *r = spec[kx * h + y];
            }
        }
        if !rows.is_empty() {
            self.row_inv.process_with_scratch(rows, fft);
        }
        out.clear();
        for row in rows.chunks_exact(w) {
            out.extend(xs.iter().map(|&x| row[x]));
        }
    }

    /// Inverse transform (unnormalised, like rustfft), real part, row-major.
    pub fn inverse_real(&self, spec: &[Complex32]) -> Array2<f32> {
        let mut t = transpose(spec, self.h, self.w);
        self.col_inv.process(&mut t);
        let mut buf = transpose(&t, self.w, self.h);
        self.row_inv.process(&mut buf);
        let norm = 1.0 / (self.h * self.w) as f32;
        Array2::from_shape_fn((self.h, self.w), |(y, x)| buf[y * self.w + x].re * norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_major_forward_and_windowed_inverse_match_the_full_transforms() {
        let (h, w) = (12, 10);
        let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 5 + x * 3) % 7) as f32 - 2.0);
        let f = Fft2::new(h, w);
        let full = f.forward(&img);
        let mut buf: Vec<Complex32> = img.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let (mut spec, mut scratch) = (Vec::new(), Fft2Scratch::default());
        f.forward_to_columns(&mut buf, &mut spec, &mut scratch);
        for ky in 0..h {
            for kx in 0..w {
                let (got, want) = (spec[kx * h + ky], full[ky * w + kx]);
                assert!((got - want).norm() < 1e-4, "{got} vs {want}");
            }
        }
        // Rows and columns in any order, wrapped ones repeated.
        let (ys, xs) = ([11, 0, 1, 11, 5], [9, 0, 1, 2]);
        let mut out = Vec::new();
        f.inverse_window(&mut spec, &ys, &xs, &mut out, &mut scratch);
        let n = (h * w) as f32;
        for (i, &y) in ys.iter().enumerate() {
            for (j, &x) in xs.iter().enumerate() {
                let got = out[i * xs.len() + j] / n;
                assert!((got.re - img[[y, x]]).abs() < 1e-4 && got.im.abs() < 1e-4);
            }
        }
    }

    #[test]
    fn matches_a_direct_dft_and_round_trips() {
        let (h, w) = (6, 10);
        let img = Array2::from_shape_fn((h, w), |(y, x)| {
            ((y * 7 + x * 3) % 5) as f32 - 1.5 + 0.1 * x as f32
        });
        let f = Fft2::new(h, w);
        let spec = f.forward(&img);
        for (ky, kx) in [(0, 0), (1, 3), (5, 9), (2, 5)] {
            let mut acc = rustfft::num_complex::Complex64::new(0.0, 0.0);
            for y in 0..h {
                for x in 0..w {
                    let ph = -2.0
                        * std::f64::consts::PI
                        * ((ky * y) as f64 / h as f64 + (kx * x) as f64 / w as f64);
                    acc += rustfft::num_complex::Complex64::from_polar(f64::from(img[[y, x]]), ph);
                }
            }
            let got = spec[ky * w + kx];
            assert!(
                (f64::from(got.re) - acc.re).abs() < 1e-3
                    && (f64::from(got.im) - acc.im).abs() < 1e-3
            );
        }
        let back = f.inverse_real(&spec);
        for (a, b) in back.iter().zip(img.iter()) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
