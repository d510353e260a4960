//! Level-1 vector kernels shared by the stages.

/// `sum_i a[i] b[i]` over the shorter of the two slices, in eight independent f32 accumulators
/// (lanes `i mod 8`) so the compiler vectorises it; a plain `.sum()` over the products is one
/// sequential chain of additions, which it may not reorder. The order is fixed, so the result is
/// the same on every machine and thread count; it differs from the sequential sum only by
/// rounding.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // `x - 0.0` is `x` for every float (the compiler drops the subtraction).
    dot_offset(a, 0.0, b)
}

/// `sum_i (a[i] - o) b[i]`, as [`dot`]: the offset is taken off each element before the product
/// (not as `o sum b` afterwards, which would cancel catastrophically when `a` sits on a large
/// baseline).
#[inline]
pub(crate) fn dot_offset(a: &[f32], o: f32, b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - o) * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += (x[i] - o) * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::{dot, dot_offset};

    #[test]
    fn dot_matches_the_sequential_sum() {
        for n in [0usize, 1, 7, 8, 9, 63, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32 * 0.5).collect();
            let reference: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - reference).abs() <= 1e-6 * (1.0 + reference.abs()));
        }
        for n in [0usize, 5, 8, 17, 1000] {
            let a: Vec<f32> = (0..n).map(|i| 1000.0 + ((i * 37) % 11) as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
            let reference: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x - 1000.0) * f64::from(*y))
                .sum();
            assert!(
                (f64::from(dot_offset(&a, 1000.0, &b)) - reference).abs()
                    <= 1e-6 * (1.0 + reference.abs())
            );
        }
        // Unequal lengths: the shorter one bounds the sum.
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[1.0, 1.0]), 3.0);
    }
}
