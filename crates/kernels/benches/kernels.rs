//! Criterion benchmarks of the kernels at the field's usual frame size (512 x 512), reported as
//! frames (or traces) per second: `cargo bench -p tessera-kernels`. Figures go to
//! docs/BENCHMARKS.md with the date and the machine.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, Array3, Axis};
use tessera_kernels::deconv::{oasis_ar1, oasis_ar2};
use tessera_kernels::denoise::{DenoiseParams, denoise};
use tessera_kernels::extract::PixelMovie;
use tessera_kernels::extract::filter::BandPass;
use tessera_kernels::register::{RigidParams, RigidRegistration, shift_frame_filled};
use tessera_kernels::rng::Rng;
use tessera_kernels::stats::{PsdAverage, noise_image};
use tessera_kernels::summary::LocalCorrelation;

const SIDE: usize = 512;

/// A textured frame (blobs on noise), the same for every run.
fn frame(seed: u64) -> Array2<f32> {
    let mut rng = Rng::new(seed, 0);
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        let blob = ((y as f32 / 9.0).sin() * (x as f32 / 7.0).cos()).max(0.0) * 200.0;
        100.0 + blob + 10.0 * rng.normal() as f32
    })
}

fn movie(frames: usize) -> Array3<f32> {
    let f = frame(1);
    let mut rng = Rng::new(2, 0);
    Array3::from_shape_fn((frames, SIDE, SIDE), |(_, y, x)| {
        f[[y, x]] + 5.0 * rng.normal() as f32
    })
}

fn per_frame(c: &mut Criterion) {
    let f = frame(3);
    let mut g = c.benchmark_group("per frame 512x512");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let mut bp = BandPass::new(3.0, 12.0);
    let mut out = Array2::<f32>::zeros((SIDE, SIDE));
    g.bench_function("band-pass (sigma 3 - 12 px)", |b| {
        b.iter(|| bp.apply(f.view(), out.view_mut()))
    });
    let reg = RigidRegistration::new(frame(4), RigidParams::default()).expect("template");
    g.bench_function("rigid shift estimate", |b| {
        b.iter(|| reg.estimate(f.view()))
    });
    g.bench_function("bilinear shift with fill", |b| {
        b.iter(|| shift_frame_filled(f.view(), 1.3, -2.7, reg.template().view()))
    });
    g.finish();
}

fn per_block(c: &mut Criterion) {
    let m = movie(64);
    let mut g = c.benchmark_group("64 frames of 512x512");
    g.throughput(Throughput::Elements(64));
    g.sample_size(10);
    g.bench_function("local correlation statistics", |b| {
        b.iter(|| LocalCorrelation::from_movie(m.view()))
    });
    g.bench_function("noise image (PSD)", |b| {
        b.iter(|| noise_image(m.view(), PsdAverage::Mean))
    });
    g.bench_function("pixel-major transpose", |b| {
        b.iter(|| PixelMovie::from_frames(m.view()))
    });
    g.finish();
    let _ = m.len_of(Axis(0));
}

/// Local low-rank denoising of 500 frames of a 128x128 crop (the cost is linear in the pixels: a
/// 512x512 frame costs 16 of these), default parameters (32 px blocks, up to 24 components).
fn denoising(c: &mut Criterion) {
    let m = movie(500).slice(ndarray::s![.., ..128, ..128]).to_owned();
    let mut g = c.benchmark_group("500 frames of 128x128");
    g.throughput(Throughput::Elements(500));
    g.sample_size(10);
    let params = DenoiseParams::default();
    g.bench_function("denoise (PMD-style)", |b| {
        b.iter(|| denoise(m.view(), &params))
    });
    g.finish();
}

fn deconvolution(c: &mut Criterion) {
    let mut rng = Rng::new(5, 0);
    let mut g = c.benchmark_group("OASIS, one 3000-frame trace");
    g.throughput(Throughput::Elements(1));
    let (mut c1, mut c2) = (0.0, 0.0);
    let y: Vec<f64> = (0..3000)
        .map(|_| {
            let s = if rng.uniform() < 0.02 { 1.0 } else { 0.0 };
            let v = 1.75 * c1 - 0.76 * c2 + s;
            (c2, c1) = (c1, v);
            v + 0.2 * rng.normal()
        })
        .collect();
    for lambda in [0.0, 0.5] {
        g.bench_with_input(BenchmarkId::new("AR(1)", lambda), &lambda, |b, &l| {
            b.iter(|| oasis_ar1(&y, 0.95, l, 0.0))
        });
        g.bench_with_input(BenchmarkId::new("AR(2)", lambda), &lambda, |b, &l| {
            b.iter(|| oasis_ar2(&y, 1.75, -0.76, l, 0.0))
        });
    }
    g.finish();
}

criterion_group!(benches, per_frame, per_block, denoising, deconvolution);
criterion_main!(benches);
