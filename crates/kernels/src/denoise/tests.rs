use ndarray::{Array2, Array3};

use super::*;
use crate::rng::Rng;

fn random_matrix(m: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = Rng::new(seed, 0);
    Array2::from_shape_simple_fn((m, n), || rng.normal() as f32)
}

#[test]
fn jacobi_eigenpairs_reconstruct_a_symmetric_matrix() {
    let b = random_matrix(9, 9, 1).mapv(f64::from);
    let a = &b + &b.t();
    let (values, vectors) = symmetric_eigen(&a);
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    let vtv = vectors.t().dot(&vectors);
    let av = a.dot(&vectors);
    for i in 0..9 {
        for j in 0..9 {
            let eye = if i == j { 1.0 } else { 0.0 };
            assert!((vtv[[i, j]] - eye).abs() < 1e-10);
            assert!((av[[i, j]] - vectors[[i, j]] * values[j]).abs() < 1e-9);
        }
    }
}

#[test]
fn orthonormalisation_zeroes_dependent_columns() {
    let mut y = random_matrix(20, 4, 2);
    let c0 = y.column(0).to_owned();
    let c1 = y.column(1).to_owned();
    y.column_mut(2).assign(&(&c0 * 2.0 - &c1));
    let q = orthonormal_columns(&y);
    let qtq = q.t().dot(&q);
    for i in 0..4 {
        for j in 0..4 {
            let want = if i == j && i != 2 { 1.0 } else { 0.0 };
            assert!((qtq[[i, j]] - want).abs() < 1e-5, "{qtq}");
        }
    }
}

/// The reference: singular values as square roots of the eigenvalues of the full `A Aᵀ`.
fn reference_singular_values(a: &Array2<f32>) -> Vec<f64> {
    let a64 = a.mapv(f64::from);
    let (values, _) = symmetric_eigen(&a64.dot(&a64.t()));
    values.iter().map(|v| v.max(0.0).sqrt()).collect()
}

#[test]
fn randomized_svd_matches_the_gram_reference_on_a_low_rank_matrix() {
    // Rank 4 plus a little noise, 30 x 80: the leading 4 singular values to 1e-4 relative.
    let a = random_matrix(30, 4, 3).dot(&random_matrix(4, 80, 4)) + random_matrix(30, 80, 5) * 1e-3;
    let mut rng = Rng::new(9, 0);
    let svd = truncated_svd(a.view(), 4, 6, 2, &mut rng);
    let want = reference_singular_values(&a);
    assert_eq!(svd.s.len(), 4);
    for (got, want) in svd.s.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-4 * want, "{got} vs {want}");
    }
    let utu = svd.u.t().dot(&svd.u);
    let vvt = svd.vt.dot(&svd.vt.t());
    for i in 0..4 {
        for j in 0..4 {
            let eye = if i == j { 1.0 } else { 0.0 };
            assert!((utu[[i, j]] - eye).abs() < 1e-4);
            assert!((vvt[[i, j]] - eye).abs() < 1e-4);
        }
    }
    // Reconstruction error is the noise level, not the signal's.
    let s = Array2::from_diag(&ndarray::Array1::from_iter(svd.s.iter().map(|&x| x as f32)));
    let rec = svd.u.dot(&s).dot(&svd.vt);
    let err = (&rec - &a).mapv(|x| x * x).sum().sqrt();
    assert!(err < 0.05, "residual {err}");
}

#[test]
fn randomized_svd_of_zeros_is_empty_and_full_rank_is_exact() {
    let mut rng = Rng::new(1, 0);
    let z = Array2::<f32>::zeros((10, 12));
    assert!(truncated_svd(z.view(), 5, 4, 1, &mut rng).s.is_empty());
    let a = random_matrix(6, 9, 6);
    let svd = truncated_svd(a.view(), 6, 4, 1, &mut rng);
    let want = reference_singular_values(&a);
    for (got, want) in svd.s.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-4 * want, "{got} vs {want}");
    }
}

#[test]
fn roughness_separates_noise_from_smooth_signals() {
    let mut rng = Rng::new(4, 0);
    let noise: Vec<f32> = (0..5000).map(|_| rng.normal() as f32).collect();
    let rt = temporal_roughness(&noise);
    // E|x0 - 2x1 + x2| / E|x| = sqrt(6) for white Gaussian noise.
    assert!((rt - 6f64.sqrt()).abs() < 0.08, "{rt}");
    let slow: Vec<f32> = (0..5000).map(|t| (t as f32 / 40.0).sin()).collect();
    assert!(temporal_roughness(&slow) < 0.01);
    let img: Vec<f32> = (0..64 * 64).map(|_| rng.normal() as f32).collect();
    let rs = spatial_roughness(&img, 64, 64);
    // E|a - b| / E|a| = sqrt(2) for independent Gaussian pixels.
    assert!((rs - 2f64.sqrt()).abs() < 0.05, "{rs}");
    let blob: Vec<f32> = (0..32 * 32)
        .map(|i| {
            let (y, x) = ((i / 32) as f32 - 16.0, (i % 32) as f32 - 16.0);
            (-(y * y + x * x) / 50.0).exp()
        })
        .collect();
    assert!(spatial_roughness(&blob, 32, 32) < 0.3);
    assert!(temporal_roughness(&[0.0; 10]).is_infinite());
    assert!(spatial_roughness(&[1.0], 1, 1).is_infinite());
}

#[test]
fn blocks_cover_every_pixel_with_half_block_stride() {
    for n in 1..90 {
        for b in 4..40 {
            let starts = block_starts(n, b);
            assert_eq!(starts[0], 0);
            let len = b.min(n);
            assert_eq!(starts.last().copied().unwrap_or(0) + len, n, "n {n} b {b}");
            assert!(
                starts
                    .windows(2)
                    .all(|w| w[0] < w[1] && w[1] - w[0] <= b / 2)
            );
        }
    }
}

/// A small movie of smooth cells: Gaussian footprints (sigma 2 px) with calcium transients
/// (exponential decay, tau 8 frames) on a constant background; returns (clean, noisy).
fn cells_movie(t: usize, h: usize, w: usize, noise: f32, seed: u64) -> (Array3<f32>, Array3<f32>) {
    let mut rng = Rng::new(seed, 0);
    let cells: Vec<(f32, f32, Vec<f32>)> = (0..8)
        .map(|_| {
            let cy = rng.range(4.0, h as f64 - 4.0) as f32;
            let cx = rng.range(4.0, w as f64 - 4.0) as f32;
            let mut c = 0.0f32;
            let trace = (0..t)
                .map(|_| {
                    c *= (-1.0f32 / 8.0).exp();
                    if rng.uniform() < 0.03 {
                        c += 3.0;
                    }
                    c
                })
                .collect();
            (cy, cx, trace)
        })
        .collect();
    let clean = Array3::from_shape_fn((t, h, w), |(f, y, x)| {
        10.0 + cells
            .iter()
            .map(|(cy, cx, tr)| {
                let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                (-d2 / 8.0).exp() * tr[f]
            })
            .sum::<f32>()
    });
    let noisy = clean.mapv(|v| v + noise * rng.normal() as f32);
    (clean, noisy)
}

fn rmse(a: &Array3<f32>, b: &Array3<f32>) -> f64 {
    let n = a.len() as f64;
    (a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

#[test]
fn a_noise_free_smooth_movie_comes_back_unchanged() {
    // Checks the partition of unity: every block keeps its signal components and the blend of
    // overlapping blocks reproduces the movie.
    let (clean, _) = cells_movie(200, 40, 48, 0.0, 7);
    let params = DenoiseParams {
        block_px: 16,
        ..DenoiseParams::default()
    };
    let out = denoise(clean.view(), &params).expect("denoise");
    let err = rmse(&out.movie, &clean);
    assert!(err < 1e-3, "rmse {err}");
}

#[test]
fn denoising_recovers_the_clean_movie_far_better_than_the_noisy_one() {
    // Noise sd 1 against transients of amplitude 3: the denoised movie is within a fifth of the
    // noise of the clean one (measured: rmse 1.00 -> 0.11), noise drops at least 3-fold (20x) and
    // storage at least 10-fold (29x).
    let (clean, noisy) = cells_movie(600, 48, 48, 1.0, 8);
    let params = DenoiseParams {
        block_px: 16,
        ..DenoiseParams::default()
    };
    let out = denoise(noisy.view(), &params).expect("denoise");
    let before = rmse(&noisy, &clean);
    let after = rmse(&out.movie, &clean);
    let r = &out.report;
    assert!(after < before / 5.0, "rmse {before} -> {after}, {r:?}");
    assert!(r.noise_after < r.noise_before / 3.0, "{r:?}");
    assert!(r.compression_ratio > 10.0, "{r:?}");
    assert!(r.ranks.iter().any(|&k| k > 0), "{r:?}");
}

#[test]
fn pure_noise_keeps_almost_nothing() {
    let mut rng = Rng::new(11, 0);
    let noisy = Array3::from_shape_simple_fn((500, 48, 48), || 100.0 + rng.normal() as f32);
    let params = DenoiseParams {
        block_px: 16,
        ..DenoiseParams::default()
    };
    let out = denoise(noisy.view(), &params).expect("denoise");
    let r = &out.report;
    let mean_rank = r.ranks.iter().sum::<usize>() as f64 / r.ranks.len() as f64;
    assert!(mean_rank < 0.25, "{r:?}");
    assert!(r.noise_after < 0.3 * r.noise_before, "{r:?}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (_, noisy) = cells_movie(100, 40, 40, 1.0, 12);
    let params = DenoiseParams {
        block_px: 16,
        ..DenoiseParams::default()
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool")
        .install(|| denoise(noisy.view(), &params))
        .expect("denoise");
    let many = denoise(noisy.view(), &params).expect("denoise");
    assert_eq!(one.movie, many.movie);
    assert_eq!(one.report, many.report);
}

#[test]
fn degenerate_movies_give_an_error_or_come_back_unchanged() {
    let params = DenoiseParams::default();
    let constant = Array3::<f32>::from_elem((40, 20, 30), 7.0);
    let out = denoise(constant.view(), &params).expect("constant");
    assert_eq!(out.movie, constant);
    assert!(out.report.ranks.iter().all(|&k| k == 0));
    let zeros = Array3::<f32>::zeros((40, 5, 3));
    assert_eq!(denoise(zeros.view(), &params).expect("zeros").movie, zeros);

    let single = Array3::<f32>::zeros((1, 8, 8));
    assert!(matches!(
        denoise(single.view(), &params),
        Err(KernelError::Shape(_))
    ));
    let mut nan = Array3::<f32>::zeros((20, 8, 8));
    nan[[13, 2, 5]] = f32::NAN;
    assert!(matches!(
        denoise(nan.view(), &params),
        Err(KernelError::NonFinite {
            frame: 13,
            y: 2,
            x: 5
        })
    ));
    for bad in [
        DenoiseParams {
            block_px: 2,
            ..params.clone()
        },
        DenoiseParams {
            max_rank: 0,
            ..params.clone()
        },
        DenoiseParams {
            confidence: 1.0,
            ..params.clone()
        },
    ] {
        assert!(matches!(
            denoise(constant.view(), &bad),
            Err(KernelError::InvalidParameter { .. })
        ));
    }
}

#[test]
fn the_null_noise_has_the_measured_neighbour_correlation() {
    for rho in [0.0, 0.25, 0.5] {
        let a = tap_for(rho);
        assert!((2.0 * a / (1.0 + 2.0 * a * a) - rho).abs() < 1e-12);
        let mut rng = Rng::new(5, 0);
        let z = correlated_noise(24, 32, 400, a, a, &mut rng);
        let movie = Array3::from_shape_fn((400, 24, 32), |(f, y, x)| z[[y * 32 + x, f]] + 50.0);
        let (ry, rx) = neighbour_noise_correlation(movie.view());
        assert!(
            (ry - rho).abs() < 0.03 && (rx - rho).abs() < 0.03,
            "{rho}: {ry} {rx}"
        );
    }
}

#[test]
fn spatially_correlated_noise_keeps_almost_nothing() {
    // Noise as a registered movie has it (neighbour correlation 0.4): without a matching null,
    // every noise component passed the spatial test.
    let mut rng = Rng::new(13, 0);
    let a = tap_for(0.4);
    let z = correlated_noise(48, 48, 500, a, a, &mut rng);
    let movie = Array3::from_shape_fn((500, 48, 48), |(f, y, x)| 100.0 + z[[y * 48 + x, f]]);
    let params = DenoiseParams {
        block_px: 16,
        ..DenoiseParams::default()
    };
    let r = denoise(movie.view(), &params).expect("denoise").report;
    let mean_rank = r.ranks.iter().sum::<usize>() as f64 / r.ranks.len() as f64;
    assert!(mean_rank < 0.25, "{r:?}");
    assert!((r.noise_correlation.0 - 0.4).abs() < 0.05, "{r:?}");
}
