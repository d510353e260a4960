use ndarray::{Array2, Array3, ArrayView2, Axis};

use super::*;
use crate::rng::Rng;
use crate::sim::{SimConfig, Simulation};

/// A smooth textured image: Gaussian blobs of several sizes, evaluated analytically so it can be
/// rendered at any sub-pixel offset without interpolation error.
fn blobs(h: usize, w: usize, dy: f64, dx: f64, seed: u64) -> Array2<f32> {
    let mut r = Rng::new(seed, 0);
    let spots: Vec<(f64, f64, f64, f64)> = (0..400)
        .map(|_| {
            (
                r.range(0.0, h as f64),
                r.range(0.0, w as f64),
                r.range(1.0, 4.0),
                r.range(20.0, 100.0),
            )
        })
        .collect();
    Array2::from_shape_fn((h, w), |(y, x)| {
        let (y, x) = (y as f64 - dy, x as f64 - dx);
        let v: f64 = spots
            .iter()
            .map(|&(cy, cx, s, a)| {
                a * (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * s * s)).exp()
            })
            .sum();
        (100.0 + v) as f32
    })
}

#[test]
fn recovers_known_subpixel_shifts() {
    let template = blobs(96, 112, 0.0, 0.0, 1);
    let reg = RigidRegistration::new(template, RigidParams::default()).unwrap();
    for (dy, dx) in [
        (0.0, 0.0),
        (3.25, -2.5),
        (-7.6, 4.1),
        (0.4, 0.7),
        (11.0, -9.3),
    ] {
        let frame = blobs(96, 112, dy, dx, 1);
        let s = reg.estimate(frame.view());
        assert!(
            (f64::from(s.dy) - dy).abs() < 0.15 && (f64::from(s.dx) - dx).abs() < 0.15,
            "({dy}, {dx}) -> {s:?}"
        );
        assert!(!s.clipped);
    }
}

/// The obvious phase correlation of one frame: full forward transform, whitening, full inverse,
/// peak searched on the whole cross-correlation.
fn reference_estimate(reg: &RigidRegistration, frame: ArrayView2<f32>) -> FrameShift {
    let (h, w) = reg.template.dim();
    let mut spec = reg.fft.forward(&tapered(&frame, &reg.taper, reg.fill));
    for (i, s) in spec.iter_mut().enumerate() {
        let (ky, kx) = (i / w, i % w);
        *s = *s / (s.norm() + 1e-5) * reg.reference[kx * h + ky];
    }
    let cc = reg.fft.inverse_real(&spec);
    reg.peak(|dy, dx| {
        cc[[
            dy.rem_euclid(h as isize) as usize,
            dx.rem_euclid(w as isize) as usize,
        ]]
    })
}

#[test]
fn paired_windowed_estimates_equal_the_reference() {
    // estimate_all packs two frames into one FFT and inverts only the search window; its shifts
    // must equal frame-by-frame full phase correlation. An odd count exercises the lone last frame,
    // a small field a search window that wraps around it.
    for (h, w, max) in [(96, 112, 15.0), (20, 18, 15.0)] {
        let template = blobs(h, w, 0.0, 0.0, 2);
        let params = RigidParams {
            max_shift_px: max,
            ..RigidParams::default()
        };
        let reg = RigidRegistration::new(template, params).unwrap();
        let shifts = [(3.25, -2.5), (-7.6, 4.1), (0.4, 0.7)];
        let mut movie = Array3::<f32>::zeros((3, h, w));
        for (i, &(dy, dx)) in shifts.iter().enumerate() {
            movie
                .index_axis_mut(Axis(0), i)
                .assign(&blobs(h, w, dy, dx, 2));
        }
        let all = reg.estimate_all(movie.view());
        assert_eq!(all.len(), 3);
        for (i, got) in all.iter().enumerate() {
            let want = reference_estimate(&reg, movie.index_axis(Axis(0), i));
            assert!(
                (got.dy - want.dy).abs() < 1e-3
                    && (got.dx - want.dx).abs() < 1e-3
                    && (got.peak - want.peak).abs() < 1e-4,
                "{h}x{w}: {got:?} vs {want:?}"
            );
            assert_eq!(got.clipped, want.clipped);
            let single = reg.estimate(movie.index_axis(Axis(0), i));
            assert!((got.dy - single.dy).abs() < 1e-3 && (got.dx - single.dx).abs() < 1e-3);
        }
        // The AVX2 build (where the CPU has it) and the portable one agree bit for bit.
        let mut scratch = ShiftScratch::default();
        let (a, b) = (movie.index_axis(Axis(0), 0), movie.index_axis(Axis(0), 1));
        let wide = reg.estimate_pair(a, b, &mut scratch);
        assert_eq!(wide, reg.estimate_pair_portable(a, b, &mut scratch));
        let (mut o1, mut o2) = (Array2::zeros((h, w)), Array2::zeros((h, w)));
        shift_frame_into(a, 2.3, -1.6, o1.view_mut());
        shift_frame_portable(a, 2.3, -1.6, o2.view_mut());
        assert_eq!(o1, o2);
    }
}

#[test]
fn shifts_at_the_limit_are_reported_clipped() {
    let template = blobs(96, 96, 0.0, 0.0, 2);
    let params = RigidParams {
        max_shift_px: 4.0,
        ..RigidParams::default()
    };
    let reg = RigidRegistration::new(template, params).unwrap();
    let s = reg.estimate(blobs(96, 96, 9.0, 0.0, 2).view());
    assert!(s.clipped, "{s:?}");
    assert!(!reg.estimate(blobs(96, 96, 1.0, 1.0, 2).view()).clipped);
}

#[test]
fn shift_frame_undoes_integer_and_subpixel_shifts() {
    let base = blobs(64, 64, 0.0, 0.0, 3);
    let moved = blobs(64, 64, 2.0, -3.0, 3);
    let back = shift_frame(moved.view(), 2.0, -3.0);
    // Away from the replicated edges the integer shift is exact.
    for y in 5..58 {
        for x in 5..58 {
            assert!((back[[y, x]] - base[[y, x]]).abs() < 1e-3);
        }
    }
    // Sub-pixel shifts are bilinear: compare with the formula written out.
    let (dy, dx) = (0.3f32, -1.75f32);
    let got = shift_frame(base.view(), dy, dx);
    for y in 3..60usize {
        for x in 3..60usize {
            let (sy, sx) = (y as f32 + dy, x as f32 + dx);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (ty, tx) = (sy - sy.floor(), sx - sx.floor());
            let want = base[[y0, x0]] * (1.0 - ty) * (1.0 - tx)
                + base[[y0, x0 + 1]] * (1.0 - ty) * tx
                + base[[y0 + 1, x0]] * ty * (1.0 - tx)
                + base[[y0 + 1, x0 + 1]] * ty * tx;
            assert!((got[[y, x]] - want).abs() < 1e-3, "({y}, {x})");
        }
    }
}

/// 300 frames of 128 x 128 of the `large-motion` preset, and the simulated motion (t, 2).
fn moving_movie(seed: u64) -> (Array3<f32>, Array2<f32>) {
    let mut c = SimConfig::preset("large-motion").unwrap();
    c.frames = 300;
    c.height = 128;
    c.width = 128;
    c.seed = seed;
    let sim = Simulation::new(c).unwrap();
    (
        sim.render(0, 300).mapv(f32::from),
        sim.ground_truth().motion,
    )
}

#[test]
fn tracks_simulated_motion() {
    let (movie, truth) = moving_movie(21);
    let reg = RigidRegistration::from_movie(movie.view(), RigidParams::default()).unwrap();
    let est = reg.estimate_all(movie.view());
    // The template sits at some offset of its own: compare after removing the mean difference.
    let diff = |a: usize| -> Vec<f64> {
        est.iter()
            .zip(truth.axis_iter(Axis(0)))
            .map(|(e, t)| f64::from(if a == 0 { e.dy } else { e.dx }) - f64::from(t[a]))
            .collect()
    };
    for axis in 0..2 {
        let d = diff(axis);
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let rms = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
        let motion_rms = (truth
            .column(axis)
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / 300.0)
            .sqrt();
        assert!(
            rms < 0.3,
            "axis {axis}: residual rms {rms} px against motion rms {motion_rms}"
        );
    }
    assert!(est.iter().all(|s| !s.clipped));
}

#[test]
fn rejects_tiny_frames() {
    assert!(RigidRegistration::new(Array2::zeros((8, 40)), RigidParams::default()).is_err());
    assert!(
        build_template(
            Array3::<f32>::zeros((0, 20, 20)).view(),
            &RigidParams::default()
        )
        .is_err()
    );
}

#[test]
fn filled_shift_takes_the_fill_where_content_left_the_view() {
    let frame = Array2::from_shape_fn((12, 10), |(y, x)| (y * 10 + x) as f32);
    let fill = Array2::from_elem((12, 10), -1.0f32);
    // Shift by (2.5, -3): rows 10.. and columns ..3 read from outside the frame.
    let out = shift_frame_filled(frame.view(), 2.5, -3.0, fill.view());
    let plain = shift_frame(frame.view(), 2.5, -3.0);
    for ((y, x), &v) in out.indexed_iter() {
        let outside = y as f32 + 2.5 > 11.0 || (x as f32) - 3.0 < 0.0;
        if outside {
            assert_eq!(v, -1.0, "({y}, {x})");
        } else {
            assert_eq!(v, plain[[y, x]], "({y}, {x})");
        }
    }
}

#[test]
fn in_view_fraction_matches_counting_frames() {
    let shifts = [
        (0.0f32, 0.0f32),
        (2.5, -1.0),
        (-3.0, 4.2),
        (0.4, 0.0),
        (f32::NAN, 0.0),
    ];
    let (h, w) = (9, 11);
    let fast = in_view_fraction(&shifts, h, w);
    let inside = |v: f32, n: usize| v >= 0.0 && v <= (n - 1) as f32;
    for y in 0..h {
        for x in 0..w {
            let n = shifts
                .iter()
                .filter(|(dy, dx)| inside(y as f32 + dy, h) && inside(x as f32 + dx, w))
                .count();
            assert_eq!(fast[[y, x]], n as f32 / 5.0, "({y}, {x})");
        }
    }
    assert!(in_view_fraction(&[], 3, 3).iter().all(|&v| v == 1.0));
}

#[test]
fn shift_frame_matches_per_pixel_bilinear_interpolation() {
    // The obvious formula, pixel by pixel, edges replicated; and the fill where the source is out.
    let (h, w) = (13, 17);
    let mut rng = Rng::new(5, 0);
    let frame = Array2::from_shape_fn((h, w), |_| rng.normal() as f32);
    let fill = Array2::from_shape_fn((h, w), |_| 100.0 + rng.normal() as f32);
    for (dy, dx) in [
        (0.0, 0.0),
        (2.3, -1.7),
        (-0.5, 0.25),
        (14.2, 3.0),
        (-3.9, -20.5),
    ] {
        let got = shift_frame(frame.view(), dy, dx);
        let filled = shift_frame_filled(frame.view(), dy, dx, fill.view());
        let c = |v: f32, n: usize| (v.floor() as isize).clamp(0, n as isize - 1) as usize;
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as f32 + dy, x as f32 + dx);
                let (fy, fx) = (sy - sy.floor(), sx - sx.floor());
                let v = |yy: f32, xx: f32| frame[[c(yy, h), c(xx, w)]];
                let want = (v(sy, sx) * (1.0 - fx) + v(sy, sx + 1.0) * fx) * (1.0 - fy)
                    + (v(sy + 1.0, sx) * (1.0 - fx) + v(sy + 1.0, sx + 1.0) * fx) * fy;
                assert!(
                    (got[[y, x]] - want).abs() < 1e-5,
                    "({dy}, {dx}) at ({y}, {x})"
                );
                let out = sy < 0.0 || sy > (h - 1) as f32 || sx < 0.0 || sx > (w - 1) as f32;
                let want_filled = if out { fill[[y, x]] } else { want };
                assert!((filled[[y, x]] - want_filled).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn registers_a_movie_in_place_at_its_median_position() {
    let (raw, truth) = moving_movie(22);
    let mut movie = raw.clone();
    let (reg, shifts) = register_in_place(movie.view_mut(), &RigidParams::default()).unwrap();
    assert_eq!(shifts.len(), 300);
    // The shifts track the true motion up to one offset, and that offset is the truth's median:
    // the registered movie keeps the recording's own pixel frame.
    let median = |v: Vec<f32>| {
        let mut v: Vec<f64> = v.into_iter().map(f64::from).collect();
        crate::stats::median(&mut v).unwrap()
    };
    for axis in 0..2 {
        let est: Vec<f32> = shifts
            .iter()
            .map(|s| if axis == 0 { s.dy } else { s.dx })
            .collect();
        let truth_axis: Vec<f32> = truth.column(axis).to_vec();
        let truth_median = median(truth_axis.clone());
        let err: Vec<f64> = est
            .iter()
            .zip(&truth_axis)
            .map(|(&e, &t)| f64::from(e) - (f64::from(t) - truth_median))
            .collect();
        let rms = (err.iter().map(|e| e * e).sum::<f64>() / err.len() as f64).sqrt();
        assert!(
            rms < 0.3,
            "axis {axis}: rms {rms} px from the centred truth"
        );
        assert!(median(est).abs() < 0.05, "axis {axis}: shifts not centred");
    }
    // Every frame is the raw frame moved by its shift, with the template where content left the view.
    for t in [0usize, 137, 299] {
        let s = shifts[t];
        let want = shift_frame_filled(
            raw.index_axis(Axis(0), t),
            s.dy,
            s.dx,
            reg.template().view(),
        );
        assert_eq!(movie.index_axis(Axis(0), t), want, "frame {t}");
    }
    // No frames, and frames too small to register, are errors.
    let params = RigidParams::default();
    assert!(register_in_place(Array3::<f32>::zeros((0, 32, 32)).view_mut(), &params).is_err());
    assert!(register_in_place(Array3::<f32>::zeros((5, 8, 40)).view_mut(), &params).is_err());
}
