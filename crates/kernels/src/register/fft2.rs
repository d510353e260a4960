//! 2-D FFTs of real images on rustfft: rows, then columns through a transpose.

use std::sync::Arc;

use ndarray::Array2;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

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
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    dst
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

    /// Forward transforms of two real images with one complex transform: `Z = F(a + i b)`, then
    /// `A(k) = (Z(k) + conj Z(-k)) / 2` and `B(k) = (Z(k) - conj Z(-k)) / 2i` (the spectra of real
    /// images are Hermitian).
    pub fn forward_pair(
        &self,
        a: &Array2<f32>,
        b: &Array2<f32>,
    ) -> (Vec<Complex32>, Vec<Complex32>) {
        let mut buf: Vec<Complex32> = a
            .iter()
            .zip(b.iter())
            .map(|(&re, &im)| Complex32::new(re, im))
            .collect();
        self.row_fwd.process(&mut buf);
        let mut t = transpose(&buf, self.h, self.w);
        self.col_fwd.process(&mut t);
        let z = transpose(&t, self.w, self.h);
        let (h, w) = (self.h, self.w);
        let mut sa = vec![Complex32::new(0.0, 0.0); h * w];
        let mut sb = vec![Complex32::new(0.0, 0.0); h * w];
        for ky in 0..h {
            for kx in 0..w {
                let zk = z[ky * w + kx];
                let zm = z[((h - ky) % h) * w + (w - kx) % w].conj();
                sa[ky * w + kx] = (zk + zm) * 0.5;
                // (zk - zm) / 2i = -i (zk - zm) / 2
                let d = zk - zm;
                sb[ky * w + kx] = Complex32::new(d.im, -d.re) * 0.5;
            }
        }
        (sa, sb)
    }

    /// Inverse transforms of two Hermitian spectra (of real images) with one complex transform:
    /// `F⁻¹(sa + i sb)` has `F⁻¹ sa` as its real part and `F⁻¹ sb` as its imaginary part.
    pub fn inverse_real_pair(
        &self,
        sa: &[Complex32],
        sb: &[Complex32],
    ) -> (Array2<f32>, Array2<f32>) {
        let z: Vec<Complex32> = sa
            .iter()
            .zip(sb)
            .map(|(&a, &b)| Complex32::new(a.re - b.im, a.im + b.re))
            .collect();
        let mut t = transpose(&z, self.h, self.w);
        self.col_inv.process(&mut t);
        let mut buf = transpose(&t, self.w, self.h);
        self.row_inv.process(&mut buf);
        let norm = 1.0 / (self.h * self.w) as f32;
        let w = self.w;
        (
            Array2::from_shape_fn((self.h, w), |(y, x)| buf[y * w + x].re * norm),
            Array2::from_shape_fn((self.h, w), |(y, x)| buf[y * w + x].im * norm),
        )
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
    fn paired_transforms_match_single_ones() {
        let (h, w) = (12, 10);
        let a = Array2::from_shape_fn((h, w), |(y, x)| ((y * 5 + x * 3) % 7) as f32 - 2.0);
        let b = Array2::from_shape_fn((h, w), |(y, x)| (y as f32 * 0.3).sin() + x as f32 * 0.1);
        let f = Fft2::new(h, w);
        let (sa, sb) = f.forward_pair(&a, &b);
        for (got, want) in sa
            .iter()
            .zip(f.forward(&a))
            .chain(sb.iter().zip(f.forward(&b)))
        {
            assert!((got - want).norm() < 1e-4, "{got} vs {want}");
        }
        let (ra, rb) = f.inverse_real_pair(&sa, &sb);
        for (got, want) in ra.iter().zip(&a).chain(rb.iter().zip(&b)) {
            assert!((got - want).abs() < 1e-4);
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
