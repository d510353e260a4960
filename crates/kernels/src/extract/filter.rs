//! Separable Gaussian filtering of images (edges reflected), used to band-pass movies for detection.

use ndarray::{Array2, ArrayView2};

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
pub fn gaussian(img: ArrayView2<f32>, sigma: f64) -> Array2<f32> {
    if sigma <= 0.0 {
        return img.to_owned();
    }
    let k = kernel(sigma);
    let half = (k.len() / 2) as isize;
    let (h, w) = img.dim();
    let mut tmp = Array2::<f32>::zeros((h, w));
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (j, kv) in k.iter().enumerate() {
                acc += kv * img[[y, reflect(x as isize + j as isize - half, w)]];
            }
            tmp[[y, x]] = acc;
        }
    }
    let mut out = Array2::<f32>::zeros((h, w));
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (j, kv) in k.iter().enumerate() {
                acc += kv * tmp[[reflect(y as isize + j as isize - half, h), x]];
            }
            out[[y, x]] = acc;
        }
    }
    out
}

/// Band-pass: `G_{sigma_small} * img - G_{sigma_large} * img` (difference of Gaussians), which keeps
/// cell-sized structure and removes smooth background such as neuropil (CNMF-E's zero-mean kernel
/// serves the same purpose).
pub fn band_pass(img: ArrayView2<f32>, sigma_small: f64, sigma_large: f64) -> Array2<f32> {
    gaussian(img, sigma_small) - gaussian(img, sigma_large)
}

#[cfg(test)]
mod tests {
    use super::*;

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
