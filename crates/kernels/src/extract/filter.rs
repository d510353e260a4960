//! Separable Gaussian filtering of images (edges reflected), used to band-pass movies for detection:
//! exact for the small (cell-sized) Gaussian, a cascade of box filters for the large (background)
//! one.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2};

use crate::layout::transpose_into;

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
    Scratch::default().convolve(img, None, &kernel(sigma), 1.0, out.view_mut());
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
    /// `out += alpha * (g_y * (g_x * (img - offset)))` for the 1-D kernel `k` (odd length), edges
    /// reflected; no offset is zero.
    fn convolve(
        &mut self,
        img: ArrayView2<f32>,
        offset: Option<ArrayView2<f32>>,
        k: &[f32],
        alpha: f32,
        out: ArrayViewMut2<f32>,
    ) {
        crate::vector::avx2(
            #[inline(always)]
            || self.convolve_portable(img, offset, k, alpha, out),
        )
    }

    #[inline(always)]
    fn convolve_portable(
        &mut self,
        img: ArrayView2<f32>,
        offset: Option<ArrayView2<f32>>,
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
        for (y, dst) in self.rows.chunks_exact_mut(w.max(1)).enumerate() {
            let (left, rest) = self.padded.split_at_mut(half);
            let (middle, right) = rest.split_at_mut(w);
            centred_row(img.row(y), offset.as_ref().map(|o| o.row(y)), middle);
            for (i, p) in left.iter_mut().enumerate() {
                *p = middle[reflect(i as isize - half as isize, w)];
            }
            for (i, p) in right.iter_mut().enumerate() {
                *p = middle[reflect((w + i) as isize, w)];
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

/// `dst = src - offset` (no offset: a copy), from contiguous rows where they are.
#[inline(always)]
fn centred_row(src: ArrayView1<f32>, offset: Option<ArrayView1<f32>>, dst: &mut [f32]) {
    match (src.as_slice(), offset.as_ref().map(|o| o.as_slice())) {
        (Some(s), None) => dst.copy_from_slice(s),
        (Some(s), Some(Some(o))) => {
            for ((d, &v), &m) in dst.iter_mut().zip(s).zip(o) {
                *d = v - m;
            }
        }
        _ => {
            for (i, (d, &v)) in dst.iter_mut().zip(src.iter()).enumerate() {
                *d = v - offset.as_ref().map_or(0.0, |o| o[i]);
            }
        }
    }
}

/// Widths of `n` box filters whose cascade has variance close to `sigma^2` (Kovesi 2010, "Fast
/// almost-Gaussian filtering", after Wells 1986): odd widths `wl` and `wl + 2` around
/// `sqrt(12 sigma^2 / n + 1)`, as many of each as makes the summed variance `sum (w^2 - 1) / 12`
/// nearest to `sigma^2`. By the central limit theorem three boxes are within a few percent of
/// the Gaussian.
fn box_widths(sigma: f64, n: usize) -> Vec<usize> {
    let nf = n as f64;
    let ideal = (12.0 * sigma * sigma / nf + 1.0).sqrt();
    let mut wl = ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wl = wl.max(1);
    let wlf = wl as f64;
    let m = ((12.0 * sigma * sigma - nf * wlf * wlf - 4.0 * nf * wlf - 3.0 * nf)
        / (-4.0 * wlf - 4.0))
        .round()
        .clamp(0.0, nf) as usize;
    (0..n)
        .map(|i| if i < m { wl as usize } else { wl as usize + 2 })
        .collect()
}

/// Running-sum box filters, reused across frames.
#[derive(Debug, Default, Clone)]
struct BoxScratch {
    a: Vec<f32>,
    b: Vec<f32>,
    acc: Vec<f32>,
}

impl BoxScratch {
    /// `out += alpha * B_{w_n} * ... * B_{w_1} * (img - offset)`, each `B_w` the mean over a centred window
    /// of `w` (odd) pixels along columns then along rows, edges reflected (as [`Scratch::convolve`])
    /// before every pass. Each pass is a running sum of whole rows (O(1) per pixel whatever the
    /// width, and vectorised across the row); rows are filtered as the columns of the transpose.
    fn convolve(
        &mut self,
        img: ArrayView2<f32>,
        offset: Option<ArrayView2<f32>>,
        widths: &[usize],
        alpha: f32,
        mut out: ArrayViewMut2<f32>,
    ) {
        let (h, w) = img.dim();
        self.a.resize(h * w, 0.0);
        for (y, dst) in self.a.chunks_exact_mut(w.max(1)).enumerate() {
            centred_row(img.row(y), offset.as_ref().map(|o| o.row(y)), dst);
        }
        self.b.resize(h * w, 0.0);
        self.down_columns(h, w, widths);
        transpose_into(&self.a, h, w, &mut self.b);
        std::mem::swap(&mut self.a, &mut self.b);
        self.down_columns(w, h, widths);
        // `a` holds the result transposed (w x h).
        transpose_into(&self.a, w, h, &mut self.b);
        for (mut dst, src) in out
            .rows_mut()
            .into_iter()
            .zip(self.b.chunks_exact(w.max(1)))
        {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += alpha * v;
            }
        }
    }

    /// The box passes down the columns of `a` (`rows x cols`, row-major); the result is left in `a`.
    fn down_columns(&mut self, rows: usize, cols: usize, widths: &[usize]) {
        for &width in widths {
            let r = width as isize / 2;
            let inv = 1.0 / width as f32;
            self.acc.clear();
            self.acc.resize(cols, 0.0);
            let row = |i: usize| i * cols..(i + 1) * cols;
            for j in -r..=r {
                for (c, &v) in self.acc.iter_mut().zip(&self.a[row(reflect(j, rows))]) {
                    *c += v;
                }
            }
            for y in 0..rows {
                if y > 0 {
                    let add = &self.a[row(reflect(y as isize + r, rows))];
                    let sub = &self.a[row(reflect(y as isize - r - 1, rows))];
                    for ((c, &p), &m) in self.acc.iter_mut().zip(add).zip(sub) {
                        *c += p - m;
                    }
                }
                for (d, &c) in self.b[row(y)].iter_mut().zip(&self.acc) {
                    *d = c * inv;
                }
            }
            std::mem::swap(&mut self.a, &mut self.b);
        }
    }
}

/// A difference-of-Gaussians band-pass, `G_{sigma_small} * img - G_{sigma_large} * img`, which
/// keeps cell-sized structure and removes smooth background such as neuropil (CNMF-E's zero-mean
/// kernel serves the same purpose). The small Gaussian is applied exactly; the large one, whose
/// exact kernel is `6 sigma_large` taps wide and was most of detection's time, as a cascade of
/// three box filters of the same variance ([`box_widths`]; Suite2p's detection high-passes with a
/// single box, `uniform_filter`). Holds its kernels and buffers, for filtering many frames.
#[derive(Debug, Clone)]
pub struct BandPass {
    small: Vec<f32>,
    large: Vec<usize>,
    scratch: Scratch,
    boxes: BoxScratch,
}

impl BandPass {
    pub fn new(sigma_small: f64, sigma_large: f64) -> BandPass {
        BandPass {
            small: if sigma_small > 0.0 {
                kernel(sigma_small)
            } else {
                vec![1.0]
            },
            large: if sigma_large > 0.0 {
                box_widths(sigma_large, 3)
            } else {
                Vec::new()
            },
            scratch: Scratch::default(),
            boxes: BoxScratch::default(),
        }
    }

    /// Writes the band-passed `img` into `out` (same shape).
    pub fn apply(&mut self, img: ArrayView2<f32>, out: ArrayViewMut2<f32>) {
        self.apply_centred(img, None, out);
    }

    /// Writes the band-passed `img - offset` into `out` (all the same shape): [`Self::apply`] of
    /// the difference, without making it.
    pub fn apply_centred(
        &mut self,
        img: ArrayView2<f32>,
        offset: Option<ArrayView2<f32>>,
        mut out: ArrayViewMut2<f32>,
    ) {
        out.fill(0.0);
        self.scratch
            .convolve(img, offset, &self.small, 1.0, out.view_mut());
        self.boxes.convolve(img, offset, &self.large, -1.0, out);
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

    #[test]
    fn the_avx2_build_of_the_convolution_equals_the_portable_one() {
        let mut rng = crate::rng::Rng::new(3, 0);
        let img = Array2::from_shape_fn((37, 53), |_| rng.normal() as f32 * 10.0 + 100.0);
        let k = kernel(3.0);
        let (mut wide, mut portable) = (Array2::zeros((37, 53)), Array2::zeros((37, 53)));
        Scratch::default().convolve(img.view(), None, &k, 0.7, wide.view_mut());
        Scratch::default().convolve_portable(img.view(), None, &k, 0.7, portable.view_mut());
        assert_eq!(wide, portable);
    }

    /// Band-passing with an offset equals band-passing the difference made first, bit for bit
    /// (contiguous and strided inputs, widths below the kernel's half width).
    #[test]
    fn the_centred_band_pass_equals_the_band_pass_of_the_difference() {
        let mut rng = crate::rng::Rng::new(5, 0);
        for (h, w) in [(37, 53), (9, 4), (1, 1)] {
            let img = Array2::from_shape_fn((h, w), |_| rng.normal() as f32 * 10.0 + 100.0);
            let mean = Array2::from_shape_fn((h, w), |_| rng.normal() as f32 + 100.0);
            let diff = &img - &mean;
            let mut bp = BandPass::new(2.5, 10.0);
            let (mut want, mut got) = (Array2::zeros((h, w)), Array2::zeros((h, w)));
            bp.apply(diff.view(), want.view_mut());
            bp.apply_centred(img.view(), Some(mean.view()), got.view_mut());
            assert_eq!(got, want, "{h}x{w}");
            // Columns of a transposed (strided) view.
            let (img_t, mean_t) = (img.t().to_owned(), mean.t().to_owned());
            let mut strided = Array2::zeros((h, w));
            bp.apply_centred(img_t.t(), Some(mean_t.t()), strided.view_mut());
            assert_eq!(strided, want, "{h}x{w} strided");
        }
    }

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

    /// Box filters the obvious way: every output pixel averages its reflected window, each pass
    /// along rows, then each along columns, in f64.
    fn boxes_reference(img: ArrayView2<f32>, widths: &[usize]) -> Array2<f64> {
        let (h, w) = img.dim();
        let mut a = img.mapv(f64::from);
        for &width in widths {
            let r = (width / 2) as isize;
            a = Array2::from_shape_fn((h, w), |(y, x)| {
                (-r..=r)
                    .map(|j| a[[y, reflect(x as isize + j, w)]])
                    .sum::<f64>()
                    / width as f64
            });
        }
        for &width in widths {
            let r = (width / 2) as isize;
            a = Array2::from_shape_fn((h, w), |(y, x)| {
                (-r..=r)
                    .map(|j| a[[reflect(y as isize + j, h), x]])
                    .sum::<f64>()
                    / width as f64
            });
        }
        a
    }

    #[test]
    fn box_widths_match_the_variance() {
        for sigma in [1.0, 2.5, 6.0, 12.0, 30.0] {
            let widths = box_widths(sigma, 3);
            assert_eq!(widths.len(), 3);
            assert!(widths.iter().all(|w| w % 2 == 1));
            let var: f64 = widths.iter().map(|&w| ((w * w - 1) as f64) / 12.0).sum();
            // Widths step by 2, so the variance is matched to within one step's share.
            assert!(
                (var - sigma * sigma).abs() <= 0.35 * sigma + 0.5,
                "sigma {sigma}: {widths:?} has variance {var}"
            );
        }
    }

    #[test]
    fn running_box_sums_match_the_reference_and_approximate_the_gaussian() {
        let mut rng = crate::rng::Rng::new(9, 0);
        // Sizes smaller than the windows exercise repeated reflection.
        for (h, w, sigma) in [(40, 31, 6.0), (64, 64, 12.0), (7, 50, 4.0), (1, 1, 3.0)] {
            let img = Array2::from_shape_fn((h, w), |_| rng.normal() as f32 * 10.0 + 3.0);
            let widths = box_widths(sigma, 3);
            let mut out = Array2::<f32>::from_elem((h, w), 1.0);
            BoxScratch::default().convolve(img.view(), None, &widths, 2.0, out.view_mut());
            let want = boxes_reference(img.view(), &widths);
            for (a, b) in out.iter().zip(&want) {
                assert!((f64::from(*a) - (1.0 + 2.0 * b)).abs() < 1e-4, "{a} vs {b}");
            }
        }
        // What detection sees: the band-pass of a cell (a Gaussian blob, sigma 3-5 px, on noise)
        // with the box cascade is within 2.5% of its peak of the exact difference of Gaussians
        // (1.1-1.5% with these sizes).
        let (h, w) = (96, 96);
        for (cell, r) in [(3.0f32, 6.0), (5.0, 6.0), (3.0, 3.0)] {
            let img = Array2::from_shape_fn((h, w), |(y, x)| {
                let d2 = (y as f32 - 40.0).powi(2) + (x as f32 - 55.0).powi(2);
                100.0 * (-d2 / (2.0 * cell * cell)).exp() + rng.normal() as f32
            });
            let exact =
                gaussian_reference(img.view(), r / 2.0) - gaussian_reference(img.view(), 2.0 * r);
            let mut approx = Array2::<f32>::zeros((h, w));
            BandPass::new(r / 2.0, 2.0 * r).apply(img.view(), approx.view_mut());
            let peak = exact.fold(f32::MIN, |m, &v| m.max(v));
            let worst = approx
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 0.025 * peak,
                "cell {cell}, r {r}: worst {worst} of peak {peak}"
            );
        }
    }

    #[test]
    fn band_pass_is_the_small_blur_minus_the_box_cascade() {
        let mut rng = crate::rng::Rng::new(8, 0);
        let img = Array2::from_shape_fn((40, 31), |_| rng.normal() as f32);
        let want = gaussian_reference(img.view(), 1.5).mapv(f64::from)
            - boxes_reference(img.view(), &box_widths(6.0, 3));
        // The same BandPass reused on a second image gives that image's result.
        let mut bp = BandPass::new(1.5, 6.0);
        let mut out = Array2::<f32>::from_elem((40, 31), 9.0);
        bp.apply(Array2::<f32>::ones((40, 31)).view(), out.view_mut());
        bp.apply(img.view(), out.view_mut());
        for (a, b) in out.iter().zip(&want) {
            assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs {b}");
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
