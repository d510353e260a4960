//! Level-1 vector kernels shared by the stages, and [`avx2`], which runs a hot loop compiled for
//! AVX2 where the CPU has it.

/// Runs `f` compiled with AVX2 enabled when the CPU supports it (checked once and cached by the
/// standard library), else as built (SSE2 on x86-64). The wide build is for the vectorised loops of
/// the hot kernels: eight f32 lanes instead of four. FMA is not enabled, so every operation and its
/// rounding are the same and the result is bit for bit that of the portable build; a binary built
/// for the baseline runs everywhere and uses the wider registers where they exist. `f` should be a
/// closure over code that inlines into it (`#[inline(always)]` kernels, iterators over slices):
/// functions it calls without inlining keep the baseline build.
#[inline(always)]
pub(crate) fn avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only feature `wide` is compiled for.
            #[allow(unsafe_code)]
            return unsafe { wide(f) };
        }
    }
    f()
}

/// `sum_i a[i] b[i]` over the shorter of the two slices, in eight independent f32 accumulators
/// (lanes `i mod 8`) so the compiler vectorises it; a plain `.sum()` over the products is one
/// sequential chain of additions, which it may not reorder. The order is fixed, so the result is
/// the same on every machine and thread count; it differs from the sequential sum only by
/// rounding.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // `x - 0.0` is `x` for every float (the compiler drops the subtraction).
    dot_offset(a, 0.0, b)
}

/// `sum_i (a[i] - o) b[i]`, as [`dot`]: the offset is taken off each element before the product
/// (not as `o sum b` afterwards, which would cancel catastrophically when `a` sits on a large
/// baseline).
#[inline(always)]
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
    use super::{avx2, dot, dot_offset};

    #[test]
    fn avx2_runs_the_closure_once_and_returns_its_value() {
        let mut calls = 0;
        let v = avx2(|| {
            calls += 1;
            dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0])
        });
        assert_eq!((v, calls), (32.0, 1));
    }

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
