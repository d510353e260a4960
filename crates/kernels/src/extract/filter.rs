//! Separable Gaussian filtering of images (edges reflected), used to band-pass movies for detection.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

fn kernel(sigma: f64) -> Vec<f32> {
    let half = (3.0 * sigma).ceil().max(1.0) as isize;
    let mut k: Vec<f32> = (-half..=half)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i - 1 } else { 2 * n - i - 1 };
    }
    i as usize
}

/// Gaussian blur with standard deviation `sigma` (pixels); `sigma <= 0` returns a copy.
///
/// `out = g_y * (g_x * img)` with the normalised 1-D kernel `g(i) ~ exp(-i^2 / 2 sigma^2)`,
/// `|i| <= ceil(3 sigma)`, and edges reflected (`... b a | a b c ... | c b ...`, scipy's
/// `mode="reflect"`). Rows are convolved from a reflected copy, columns as weighted sums of whole
/// rows, so both passes run over contiguous memory (see `gaussian_reference` in the tests).
pub fn gaussian(img: ArrayView2<f32>, sigma: f64) -> Array2<f32> {
    if sigma <= 0.0 {
        return img.to_owned();
    }
    let mut out = Array2::<f32>::zeros(img.dim());
    Scratch::default().convolve(img, &kernel(sigma), 1.0, out.view_mut());
    out
}

/// Buffers reused across frames, so filtering a movie allocates nothing per frame.
#[derive(Debug, Default, Clone)]
struct Scratch {
    padded: Vec<f32>,
    rows: Vec<f32>,
    column: Vec<f32>,
}

impl Scratch {
    /// `out += alpha * (g_y * (g_x * img))` for the 1-D kernel `k` (odd length), edges reflected.
    fn convolve(
        &mut self,
        img: ArrayView2<f32>,
        k: &[f32],
        alpha: f32,
        mut out: ArrayViewMut2<f32>,
    ) {
        let half = k.len() / 2;
        let (h, w) = img.dim();
        // Horizontal pass into `rows` (h x w, row-major), one reflected row at a time.
        self.rows.clear();
        self.rows.resize(h * w, 0.0);
        self.padded.resize(w + 2 * half, 0.0);
        for (src, dst) in img.rows().into_iter().zip(self.rows.chunks_exact_mut(w)) {
            for (i, p) in self.padded.iter_mut().enumerate() {
                *p = src[reflect(i as isize - half as isize, w)];
            }
            for (j, &kv) in k.iter().enumerate() {
                for (d, &p) in dst.iter_mut().zip(&self.padded[j..j + w]) {
                    *d += kv * p;
                }
            }
        }
        // Vertical pass: each output row is a weighted sum of reflected rows.
        self.column.resize(w, 0.0);
        for (y, mut dst) in out.rows_mut().into_iter().enumerate() {
            self.column.fill(0.0);
            for (j, &kv) in k.iter().enumerate() {
                let r = reflect(y as isize + j as isize - half as isize, h);
                for (d, &p) in self.column.iter_mut().zip(&self.rows[r * w..(r + 1) * w]) {
                    *d += kv * p;
                }
            }
            for (d, &c) in dst.iter_mut().zip(&self.column) {
                *d += alpha * c;
            }
        }
    }
}

/// A difference-of-Gaussians band-pass, `G_{sigma_small} * img - G_{sigma_large} * img`, which
/// keeps cell-sized structure and removes smooth background such as neuropil (CNMF-E's zero-mean
/// kernel serves the same purpose). Holds its kernels and buffers, for filtering many frames.
#[derive(Debug, Clone)]
pub struct BandPass {
    small: Vec<f32>,
    large: Vec<f32>,
    scratch: Scratch,
}

impl BandPass {
    pub fn new(sigma_small: f64, sigma_large: f64) -> BandPass {
        let k = |s: f64| if s > 0.0 { kernel(s) } else { vec![1.0] };
        BandPass {
            small: k(sigma_small),
            large: k(sigma_large),
            scratch: Scratch::default(),
        }
    }

    /// Writes the band-passed `img` into `out` (same shape).
    pub fn apply(&mut self, img: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
        out.fill(0.0);
        self.scratch.convolve(img, &self.small, 1.0, out.view_mut());
        self.scratch.convolve(img, &self.large, -1.0, out);
    }
}

/// [`BandPass`] of one image.
pub fn band_pass(img: ArrayView2<f32>, sigma_small: f64, sigma_large: f64) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(img.dim());
    BandPass::new(sigma_small, sigma_large).apply(img, out.view_mut());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious implementation: every output pixel sums its reflected neighbours, row pass then
    /// column pass, in f64.
    fn gaussian_reference(img: ArrayView2<f32>, sigma: f64) -> Array2<f32> {
        let k = kernel(sigma);
        let half = (k.len() / 2) as isize;
        let (h, w) = img.dim();
        let mut tmp = Array2::<f64>::zeros((h, w));
        for y in 0..h {
            for x in 0..w {
                tmp[[y, x]] = k
                    .iter()
                    .enumerate()
                    .map(|(j, &kv)| {
                        f64::from(kv)
                            * f64::from(img[[y, reflect(x as isize + j as isize - half, w)]])
                    })
                    .sum();
            }
        }
        Array2::from_shape_fn((h, w), |(y, x)| {
            k.iter()
                .enumerate()
                .map(|(j, &kv)| {
                    f64::from(kv) * tmp[[reflect(y as isize + j as isize - half, h), x]]
                })
                .sum::<f64>() as f32
        })
    }

    #[test]
    fn band_pass_is_the_difference_of_reference_blurs() {
        let mut rng = crate::rng::Rng::new(8, 0);
        let img = Array2::from_shape_fn((40, 31), |_| rng.normal() as f32);
        let want = gaussian_reference(img.view(), 1.5) - gaussian_reference(img.view(), 6.0);
        // The same BandPass reused on a second image gives that image's result.
        let mut bp = BandPass::new(1.5, 6.0);
        let mut out = Array2::<f32>::from_elem((40, 31), 9.0);
        bp.apply(Array2::<f32>::ones((40, 31)).view(), out.view_mut());
        bp.apply(img.view(), out.view_mut());
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn fast_gaussian_matches_the_reference() {
        let mut rng = crate::rng::Rng::new(7, 0);
        // Sizes smaller than the kernel exercise repeated reflection.
        for (h, w, sigma) in [(33, 47, 1.3), (20, 9, 4.0), (5, 64, 12.0), (1, 1, 2.0)] {
            let img = Array2::from_shape_fn((h, w), |_| rng.normal() as f32 * 10.0 + 3.0);
            let fast = gaussian(img.view(), sigma);
            let slow = gaussian_reference(img.view(), sigma);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-4, "{h}x{w} sigma {sigma}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn preserves_constants_and_matches_direct_convolution() {
        let c = Array2::from_elem((7, 9), 3.0f32);
        assert!(
            gaussian(c.view(), 1.5)
                .iter()
                .all(|v| (v - 3.0).abs() < 1e-5)
        );
        assert!(band_pass(c.view(), 1.0, 3.0).iter().all(|v| v.abs() < 1e-5));
        // An impulse in the interior spreads as the 2-D kernel (outer product of the 1-D one).
        let mut img = Array2::<f32>::zeros((21, 21));
        img[[10, 10]] = 1.0;
        let g = gaussian(img.view(), 1.2);
        let k = kernel(1.2);
        let half = k.len() / 2;
        for dy in 0..k.len() {
            for dx in 0..k.len() {
                let want = k[dy] * k[dx];
                assert!((g[[10 + dy - half, 10 + dx - half]] - want).abs() < 1e-6);
            }
        }
        assert!((g.sum() - 1.0).abs() < 1e-5);
    }
}
