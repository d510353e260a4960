//! Scoring a segmentation (and its traces) against ground truth, in the conventions the field uses
//! (see `shared/design/SCIENCE.md`, "Scoring against ground truth"):
//!
//! | convention | matching | a match counts when |
//! |---|---|---|
//! | [`Convention::Neurofinder`] | greedy: ground-truth ROIs in order, nearest remaining centroid | centroid distance < 5 px (plus inclusion and exclusion per match) |
//! | [`Convention::Caiman`] | Hungarian on `1 - IoU` of footprints binarised at 0.2 x max; pairs with centroids > 10 px apart cost 1 (CaImAn `register_ROIs`) | cost < 0.7 |
//! | [`Convention::Iou50`] | Hungarian on `1 - IoU` (STNeuroNet, SUNS) | IoU >= 0.5 |
//! | [`Convention::IouTrace`] | Hungarian on `1 - IoU` (Suite2p 2026) | IoU > 0.5 and trace correlation > 0.5 |
//!
//! `recall = TP / N_gt`, `precision = TP / N_est`, `F1 = 2PR / (P + R)`.
//!
//! Ground truth may mark some ROIs "don't care" ([`Score::ignoring`]): cells cut by the border of
//! the field, or simulated cells that never fire. They take part in the matching, so an estimate
//! that finds one is neither a hit nor a false positive, and they do not count in `N_gt`.

mod hungarian;

pub use hungarian::assign;

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::Serialize;
use tessera_core::Region;

/// A region of interest as weighted pixels `(row, col)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoiMask {
    pub pixels: Vec<[u32; 2]>,
    pub weights: Vec<f32>,
}

impl RoiMask {
    /// A binary mask from a neurofinder region (weight 1 everywhere).
    pub fn from_region(region: &Region) -> RoiMask {
        RoiMask {
            pixels: region.coordinates.clone(),
            weights: vec![1.0; region.coordinates.len()],
        }
    }

    /// A weighted footprint from row-major pixel indices of a field `width` pixels wide.
    pub fn from_indices(indices: &[u32], weights: &[f32], width: u32) -> RoiMask {
        RoiMask {
            pixels: indices.iter().map(|&p| [p / width, p % width]).collect(),
            weights: weights.to_vec(),
        }
    }

    /// Pixels with weight `> fraction x max weight`, as sorted keys `row << 32 | col`.
    fn binary(&self, fraction: f32) -> Vec<u64> {
        let max = self.weights.iter().copied().fold(0.0f32, f32::max);
        let mut keys: Vec<u64> = self
            .pixels
            .iter()
            .zip(&self.weights)
            .filter(|(_, w)| **w > fraction * max || (fraction == 0.0 && **w > 0.0))
            .map(|(p, _)| (u64::from(p[0]) << 32) | u64::from(p[1]))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Unweighted centroid `(row, col)` of the pixels with positive weight.
    pub fn centroid(&self) -> Option<[f64; 2]> {
        let mut n = 0.0;
        let mut acc = [0.0, 0.0];
        for (p, w) in self.pixels.iter().zip(&self.weights) {
            if *w > 0.0 {
                acc[0] += f64::from(p[0]);
                acc[1] += f64::from(p[1]);
                n += 1.0;
            }
        }
        (n > 0.0).then(|| [acc[0] / n, acc[1] / n])
    }
}

fn intersection(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn iou(a: &[u64], b: &[u64]) -> f64 {
    let inter = intersection(a, b);
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

fn distance(a: Option<[f64; 2]>, b: Option<[f64; 2]>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt(),
        _ => f64::INFINITY,
    }
}

/// The matching conventions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Convention {
    Neurofinder,
    Caiman,
    Iou50,
    IouTrace,
}

/// One matched pair: indices into the ground-truth and estimated lists, with the pair's IoU
/// (binarised masks) and centroid distance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub truth: usize,
    pub estimate: usize,
    pub iou: f64,
    pub distance: f64,
    /// Neurofinder only: `|GT n E| / |GT|` and `|GT n E| / |E|` of this pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<f64>,
}

/// Scores of one convention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub convention: Convention,
    pub n_truth: usize,
    pub n_estimate: usize,
    pub true_positives: usize,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
    /// Neurofinder only: mean `|GT n E| / |GT|` and `|GT n E| / |E|` over matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<f64>,
    /// Ground-truth ROIs marked "don't care", and the estimates matched to them; neither is counted
    /// in `n_truth`, `n_estimate` or the rates.
    pub ignored_truth: usize,
    pub ignored_estimates: usize,
    pub pairs: Vec<Pair>,
}

impl Score {
    fn new(convention: Convention, n_truth: usize, n_estimate: usize, pairs: Vec<Pair>) -> Score {
        let tp = pairs.len();
        let recall = if n_truth == 0 {
            0.0
        } else {
            tp as f64 / n_truth as f64
        };
        let precision = if n_estimate == 0 {
            0.0
        } else {
            tp as f64 / n_estimate as f64
        };
        let f1 = if recall + precision == 0.0 {
            0.0
        } else {
            2.0 * recall * precision / (recall + precision)
        };
        Score {
            convention,
            n_truth,
            n_estimate,
            true_positives: tp,
            recall,
            precision,
            f1,
            inclusion: None,
            exclusion: None,
            ignored_truth: 0,
            ignored_estimates: 0,
            pairs,
        }
    }

    /// The score with the ground-truth ROIs where `ignored[i]` is true treated as "don't care":
    /// they leave `N_gt`, their matches leave the pairs, and the estimates matched to them leave
    /// `N_est`. Pair indices keep referring to the full lists. Matching is not redone: the ignored
    /// ROIs competed for estimates like any other, as an annotator's "unsure" label would.
    pub fn ignoring(&self, ignored: &[bool]) -> Score {
        let is_ignored = |i: usize| ignored.get(i).copied().unwrap_or(false);
        let ignored_truth = (0..self.n_truth).filter(|&i| is_ignored(i)).count();
        let (kept, dropped): (Vec<Pair>, Vec<Pair>) = self
            .pairs
            .iter()
            .cloned()
            .partition(|p| !is_ignored(p.truth));
        let mut s = Score::new(
            self.convention,
            self.n_truth - ignored_truth,
            self.n_estimate - dropped.len(),
            kept,
        );
        s.ignored_truth = self.ignored_truth + ignored_truth;
        s.ignored_estimates = self.ignored_estimates + dropped.len();
        if self.inclusion.is_some() && !s.pairs.is_empty() {
            let n = s.pairs.len() as f64;
            s.inclusion = Some(s.pairs.iter().filter_map(|p| p.inclusion).sum::<f64>() / n);
            s.exclusion = Some(s.pairs.iter().filter_map(|p| p.exclusion).sum::<f64>() / n);
        }
        s
    }
}

/// Binarised masks and centroids of a list of ROIs, computed once for all conventions.
struct Prepared {
    binary: Vec<Vec<u64>>,
    centroid: Vec<Option<[f64; 2]>>,
}

fn prepare(rois: &[RoiMask], fraction: f32) -> Prepared {
    Prepared {
        binary: rois.iter().map(|r| r.binary(fraction)).collect(),
        centroid: rois.iter().map(RoiMask::centroid).collect(),
    }
}

/// IoU matrix (truth x estimate), computed only for pairs whose centroids are within `reach` px.
fn iou_matrix(t: &Prepared, e: &Prepared, reach: f64) -> Array2<f64> {
    let mut m = Array2::<f64>::zeros((t.binary.len(), e.binary.len()));
    for i in 0..t.binary.len() {
        for j in 0..e.binary.len() {
            if distance(t.centroid[i], e.centroid[j]) <= reach {
                m[[i, j]] = iou(&t.binary[i], &e.binary[j]);
            }
        }
    }
    m
}

/// Neurofinder: ground-truth ROIs in order each take the nearest remaining estimate if its centroid
/// is closer than `max_distance` (5 px in the benchmark).
pub fn score_neurofinder(truth: &[RoiMask], estimate: &[RoiMask], max_distance: f64) -> Score {
    let t = prepare(truth, 0.0);
    let e = prepare(estimate, 0.0);
    let mut taken = vec![false; estimate.len()];
    let mut pairs = Vec::new();
    for i in 0..truth.len() {
        let best = (0..estimate.len())
            .filter(|&j| !taken[j])
            .map(|j| (j, distance(t.centroid[i], e.centroid[j])))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, d)) = best.filter(|(_, d)| *d < max_distance) {
            taken[j] = true;
            let inter = intersection(&t.binary[i], &e.binary[j]) as f64;
            let fraction = |n: usize| if n == 0 { 0.0 } else { inter / n as f64 };
            pairs.push(Pair {
                truth: i,
                estimate: j,
                iou: iou(&t.binary[i], &e.binary[j]),
                distance: d,
                inclusion: Some(fraction(t.binary[i].len())),
                exclusion: Some(fraction(e.binary[j].len())),
            });
        }
    }
    let n = pairs.len() as f64;
    let (inc, exc) = pairs.iter().fold((0.0, 0.0), |(a, b), p| {
        (
            a + p.inclusion.unwrap_or(0.0),
            b + p.exclusion.unwrap_or(0.0),
        )
    });
    let mut s = Score::new(Convention::Neurofinder, truth.len(), estimate.len(), pairs);
    if n > 0.0 {
        s.inclusion = Some(inc / n);
        s.exclusion = Some(exc / n);
    }
    s
}

fn hungarian_on_iou(
    convention: Convention,
    t: &Prepared,
    e: &Prepared,
    reach: f64,
    accept: impl Fn(usize, usize, f64) -> bool,
) -> Score {
    let ious = iou_matrix(t, e, reach);
    let cost = ious.mapv(|v| 1.0 - v);
    let assignment = assign(&cost);
    let pairs = assignment
        .iter()
        .enumerate()
        .filter_map(|(i, j)| j.map(|j| (i, j)))
        .filter(|&(i, j)| accept(i, j, ious[[i, j]]))
        .map(|(i, j)| Pair {
            truth: i,
            estimate: j,
            iou: ious[[i, j]],
            distance: distance(t.centroid[i], e.centroid[j]),
            inclusion: None,
            exclusion: None,
        })
        .collect();
    Score::new(convention, t.binary.len(), e.binary.len(), pairs)
}

/// CaImAn `register_ROIs`: footprints binarised at 0.2 x their maximum, cost `1 - IoU` (1 for
/// centroids more than `max_distance` = 10 px apart), Hungarian assignment, match when cost <
/// `max_cost` (0.7; the CaImAn paper used 0.8).
pub fn score_caiman(
    truth: &[RoiMask],
    estimate: &[RoiMask],
    max_distance: f64,
    max_cost: f64,
) -> Score {
    let t = prepare(truth, 0.2);
    let e = prepare(estimate, 0.2);
    hungarian_on_iou(Convention::Caiman, &t, &e, max_distance, |_, _, iou| {
        1.0 - iou < max_cost
    })
}

/// STNeuroNet/SUNS: Hungarian on `1 - IoU` of the masks (footprints binarised at 0.2 x max),
/// match when IoU >= `min_iou` (0.5).
pub fn score_iou(truth: &[RoiMask], estimate: &[RoiMask], min_iou: f64) -> Score {
    let t = prepare(truth, 0.2);
    let e = prepare(estimate, 0.2);
    hungarian_on_iou(Convention::Iou50, &t, &e, f64::INFINITY, |_, _, iou| {
        iou >= min_iou
    })
}

/// Suite2p (2026): Hungarian on `1 - IoU`, match when IoU > `min_iou` (0.5) and the Pearson
/// correlation of the pair's traces (rows of `truth_traces` and `estimate_traces`) > `min_corr` (0.5).
pub fn score_iou_trace(
    truth: &[RoiMask],
    estimate: &[RoiMask],
    truth_traces: ArrayView2<f32>,
    estimate_traces: ArrayView2<f32>,
    min_iou: f64,
    min_corr: f64,
) -> Score {
    let t = prepare(truth, 0.2);
    let e = prepare(estimate, 0.2);
    hungarian_on_iou(Convention::IouTrace, &t, &e, f64::INFINITY, |i, j, iou| {
        iou > min_iou
            && i < truth_traces.nrows()
            && j < estimate_traces.nrows()
            && pearson(truth_traces.row(i), estimate_traces.row(j)) > min_corr
    })
}

/// Pearson correlation of two equally long series; 0 when either is constant or they differ in length.
pub fn pearson(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b.iter()) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Correlation of true and inferred spike rates summed in bins of `bin_s` seconds (100 ms is the
/// field's convention).
pub fn spike_rate_correlation(
    truth: ArrayView1<f32>,
    inferred: ArrayView1<f32>,
    frame_rate_hz: f64,
    bin_s: f64,
) -> f64 {
    let per_bin = ((bin_s * frame_rate_hz).round() as usize).max(1);
    let bins = |x: ArrayView1<f32>| -> ndarray::Array1<f32> {
        x.as_slice()
            .map(|s| {
                s.chunks(per_bin)
                    .map(|c| c.iter().sum())
                    .collect::<Vec<f32>>()
            })
            .unwrap_or_else(|| x.to_vec().chunks(per_bin).map(|c| c.iter().sum()).collect())
            .into()
    };
    pearson(bins(truth).view(), bins(inferred).view())
}

#[cfg(test)]
mod tests;
