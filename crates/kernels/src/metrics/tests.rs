use std::collections::HashSet;

use ndarray::Array2;

use super::*;
use crate::rng::Rng;

fn disk(cy: f64, cx: f64, r: f64) -> RoiMask {
    let mut m = RoiMask::default();
    for y in 0..200u32 {
        for x in 0..200u32 {
            if (f64::from(y) - cy).powi(2) + (f64::from(x) - cx).powi(2) <= r * r {
                m.pixels.push([y, x]);
                m.weights.push(1.0);
            }
        }
    }
    m
}

fn grid(n: usize, shift: f64) -> Vec<RoiMask> {
    (0..n)
        .map(|i| {
            disk(
                20.0 + 25.0 * (i % 6) as f64,
                20.0 + 25.0 * (i / 6) as f64 + shift,
                6.0,
            )
        })
        .collect()
}

#[test]
fn identical_sets_score_one_everywhere() {
    let a = grid(12, 0.0);
    let traces = Array2::from_shape_fn((12, 50), |(i, t)| ((i * 7 + t * 3) % 11) as f32);
    for s in [
        score_neurofinder(&a, &a, 5.0),
        score_caiman(&a, &a, 10.0, 0.7),
        score_iou(&a, &a, 0.5),
        score_iou_trace(&a, &a, traces.view(), traces.view(), 0.5, 0.5),
    ] {
        assert_eq!((s.true_positives, s.f1), (12, 1.0), "{:?}", s.convention);
    }
    let nf = score_neurofinder(&a, &a, 5.0);
    assert_eq!((nf.inclusion, nf.exclusion), (Some(1.0), Some(1.0)));
}

#[test]
fn shifts_separate_the_conventions() {
    let truth = grid(12, 0.0);
    // A 3 px shift keeps centroids within 5 px and IoU of radius-6 disks near 0.54.
    let near = grid(12, 3.0);
    assert_eq!(score_neurofinder(&truth, &near, 5.0).true_positives, 12);
    assert_eq!(score_iou(&truth, &near, 0.5).true_positives, 12);
    // A 6 px shift: centroids 6 px apart (no neurofinder match), IoU ~0.3 (CaImAn's cost 0.7 is the edge).
    let far = grid(12, 6.0);
    assert_eq!(score_neurofinder(&truth, &far, 5.0).true_positives, 0);
    assert_eq!(score_iou(&truth, &far, 0.5).true_positives, 0);
    let s = score_caiman(&truth, &far, 10.0, 0.8);
    assert_eq!(s.true_positives, 12, "{:?}", s.pairs.first());
}

#[test]
fn misses_and_false_positives_count() {
    let truth = grid(10, 0.0);
    let mut est: Vec<RoiMask> = truth[..8].to_vec();
    est.push(disk(190.0, 190.0, 5.0));
    let s = score_iou(&truth, &est, 0.5);
    assert_eq!((s.n_truth, s.n_estimate, s.true_positives), (10, 9, 8));
    assert!((s.recall - 0.8).abs() < 1e-12 && (s.precision - 8.0 / 9.0).abs() < 1e-12);
    let f1 = 2.0 * 0.8 * (8.0 / 9.0) / (0.8 + 8.0 / 9.0);
    assert!((s.f1 - f1).abs() < 1e-12);
    assert_eq!(score_iou(&truth, &[], 0.5).f1, 0.0);
}

#[test]
fn neurofinder_is_greedy_in_ground_truth_order() {
    // GT0 at x=10 is nearest to E1 (x=11), which GT1 (x=13) also wants; GT0 takes it first, GT1 is
    // left with E0 at x=7 (6 px away), so one match, where an optimal assignment has two.
    let truth = vec![disk(50.0, 10.0, 3.0), disk(50.0, 13.0, 3.0)];
    let est = vec![disk(50.0, 7.0, 3.0), disk(50.0, 11.0, 3.0)];
    let s = score_neurofinder(&truth, &est, 5.0);
    assert_eq!(s.true_positives, 1);
    assert_eq!((s.pairs[0].truth, s.pairs[0].estimate), (0, 1));
}

#[test]
fn trace_convention_needs_correlated_traces() {
    let a = grid(4, 0.0);
    let t = Array2::from_shape_fn((4, 100), |(i, t)| ((t as f32 / 5.0) + i as f32).sin());
    let anti = t.mapv(|v| -v);
    assert_eq!(
        score_iou_trace(&a, &a, t.view(), anti.view(), 0.5, 0.5).true_positives,
        0
    );
    assert_eq!(
        score_iou_trace(&a, &a, t.view(), t.view(), 0.5, 0.5).true_positives,
        4
    );
}

#[test]
fn fast_iou_matches_a_set_reference() {
    let mut r = Rng::new(8, 0);
    for _ in 0..50 {
        let mk = |r: &mut Rng| {
            let mut m = RoiMask::default();
            for _ in 0..(r.uniform() * 80.0) as usize {
                m.pixels
                    .push([(r.uniform() * 12.0) as u32, (r.uniform() * 12.0) as u32]);
                m.weights.push(r.uniform() as f32);
            }
            m
        };
        let (a, b) = (mk(&mut r), mk(&mut r));
        let set = |m: &RoiMask| -> HashSet<[u32; 2]> {
            let max = m.weights.iter().copied().fold(0.0f32, f32::max);
            m.pixels
                .iter()
                .zip(&m.weights)
                .filter(|(_, w)| **w > 0.2 * max)
                .map(|(p, _)| *p)
                .collect()
        };
        let (sa, sb) = (set(&a), set(&b));
        let inter = sa.intersection(&sb).count();
        let union = sa.union(&sb).count();
        let want = if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        };
        assert!((iou(&a.binary(0.2), &b.binary(0.2)) - want).abs() < 1e-12);
    }
}

#[test]
fn spike_rates_correlate_in_bins() {
    let truth = ndarray::Array1::from_shape_fn(300, |t| if t % 17 == 0 { 1.0f32 } else { 0.0 });
    // The same spikes one frame late still fall in the same 100 ms bins (3 frames at 30 Hz) mostly.
    let late = ndarray::Array1::from_shape_fn(300, |t| if t % 17 == 1 { 1.0f32 } else { 0.0 });
    assert!((spike_rate_correlation(truth.view(), truth.view(), 30.0, 0.1) - 1.0).abs() < 1e-12);
    assert!(spike_rate_correlation(truth.view(), late.view(), 30.0, 0.1) > 0.5);
    assert!(pearson(truth.view(), ndarray::Array1::zeros(300).view()) == 0.0);
}

#[test]
fn ignored_truth_is_neither_hit_nor_false_positive() {
    // Truth: 12 cells, of which 0..3 are "don't care". Estimate: cells 0..8 and one stray ROI.
    let truth = grid(12, 0.0);
    let mut est: Vec<RoiMask> = truth[..8].to_vec();
    est.push(disk(190.0, 190.0, 6.0));
    let ignored: Vec<bool> = (0..12).map(|i| i < 3).collect();
    for s in [
        score_neurofinder(&truth, &est, 5.0),
        score_caiman(&truth, &est, 10.0, 0.7),
        score_iou(&truth, &est, 0.5),
    ] {
        let t = s.ignoring(&ignored);
        // 9 scored truth cells, 5 found; 9 estimates minus the 3 on ignored cells.
        assert_eq!(
            (t.n_truth, t.n_estimate, t.true_positives),
            (9, 6, 5),
            "{:?}",
            s.convention
        );
        assert_eq!((t.ignored_truth, t.ignored_estimates), (3, 3));
        assert!((t.recall - 5.0 / 9.0).abs() < 1e-12);
        assert!((t.precision - 5.0 / 6.0).abs() < 1e-12);
        assert!(t.pairs.iter().all(|p| p.truth >= 3));
        if s.convention == Convention::Neurofinder {
            assert!((t.inclusion.unwrap() - 1.0).abs() < 1e-12);
        }
        // Nothing ignored: the same score.
        assert_eq!(s.ignoring(&[false; 12]), s);
    }
}
