//! `tessera evaluate`: score ROIs (and traces) against ground truth in the field's conventions.

use std::path::Path;

use anyhow::{Context, bail};
use ndarray::{Array2, Ix1, Ix2};
use serde::Serialize;
use tessera_core::regions_from_json;
use tessera_io::{Location, Store};
use tessera_kernels::metrics::{
    RoiMask, Score, pearson, score_caiman, score_iou, score_iou_trace, score_neurofinder,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ground truth: a neurofinder regions JSON file, or a tessera simulation (its ground_truth group).
    #[arg(long)]
    pub truth: String,
    /// The segmentation to score: a neurofinder regions JSON file, or a tessera simulation.
    #[arg(long)]
    pub estimate: String,
    /// Neurofinder's centroid distance threshold in pixels.
    #[arg(long, default_value_t = 5.0)]
    pub max_distance: f64,
    /// Which cells of a simulation's ground truth count (the others are "don't care": an estimate
    /// matching one is neither a hit nor a false positive). `detectable`: cells with at least half
    /// their footprint in the field that fire at least once; `visible`: also the silent ones;
    /// `all`: every cell with pixels in the field.
    #[arg(long, value_enum, default_value_t = TruthCells::Detectable)]
    pub truth_cells: TruthCells,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TruthCells {
    Detectable,
    Visible,
    All,
}

/// A cell counts when at least this fraction of its footprint lies in the field (the simulator's
/// `SCORED_VISIBLE_FRACTION`).
const SCORED_VISIBLE_FRACTION: f64 = tessera_kernels::sim::SCORED_VISIBLE_FRACTION;

/// ROIs with optional traces (rows match ROIs).
struct Rois {
    masks: Vec<RoiMask>,
    traces: Option<Array2<f32>>,
    /// For a simulation's ground truth: per cell, the fraction of its footprint in the field and
    /// whether it fires in the recording.
    cells: Option<Vec<(f64, bool)>>,
}

fn load(source: &str) -> anyhow::Result<Rois> {
    let path = Path::new(source);
    if path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
        let regions = regions_from_json(&text)
            .with_context(|| format!("{source} is not neurofinder regions JSON"))?;
        return Ok(Rois {
            masks: regions.iter().map(RoiMask::from_region).collect(),
            traces: None,
            cells: None,
        });
    }
    let location = Location::parse(source)?;
    if let Location::File(p) = &location
        && !p.exists()
    {
        bail!("{source}: no such file or directory");
    }
    let store = Store::open(&location)?;
    // An interrupted write or run is refused before anything is read from it.
    store.check_complete()?;
    // A simulation's ground truth, or an extraction's ROIs.
    let (group, traces_path) = if store.attributes("ground_truth/footprints")?.is_some() {
        ("ground_truth", "ground_truth/fluorescence")
    } else if store.attributes("rois/footprints")?.is_some() {
        ("rois", "rois/traces")
    } else {
        bail!(
            "{source} is neither a regions JSON file, a tessera simulation (ground_truth/) nor an extraction (rois/)"
        );
    };
    let attrs = store
        .attributes(&format!("{group}/footprints"))?
        .unwrap_or_default();
    let width = attrs
        .get("width")
        .and_then(serde_json::Value::as_u64)
        .filter(|&w| w > 0 && w <= u64::from(u32::MAX))
        .with_context(|| {
            format!(
                "{source}: {group}/footprints has no valid width attribute (a positive integer)"
            )
        })? as u32;
    let read_u32 = |name: &str| -> anyhow::Result<ndarray::Array1<u32>> {
        Ok(store
            .read_array::<u32>(&format!("{group}/footprints/{name}"))?
            .into_dimensionality::<Ix1>()?)
    };
    let (cell, pixel) = (read_u32("cell")?, read_u32("pixel")?);
    let weight = store
        .read_array::<f32>(&format!("{group}/footprints/weight"))?
        .into_dimensionality::<Ix1>()?;
    let traces = store
        .read_array::<f32>(traces_path)?
        .into_dimensionality::<Ix2>()?;
    let mut masks = vec![RoiMask::default(); traces.nrows()];
    for ((&c, &p), &w) in cell.iter().zip(pixel.iter()).zip(weight.iter()) {
        let m = masks.get_mut(c as usize).with_context(|| {
            format!(
                "{source}: footprint of cell {c} beyond the traces' {} rows",
                traces.nrows()
            )
        })?;
        m.pixels.push([p / width, p % width]);
        m.weights.push(w);
    }
    if group == "rois" {
        // Extractions keep rejected components beside accepted ones: score the accepted.
        let accepted = store
            .read_array::<u8>("rois/accepted")?
            .into_dimensionality::<Ix1>()?;
        let keep: Vec<usize> = (0..masks.len())
            .filter(|&i| accepted.get(i) == Some(&1))
            .collect();
        let masks = keep.iter().map(|&i| masks[i].clone()).collect();
        return Ok(Rois {
            masks,
            traces: Some(traces.select(ndarray::Axis(0), &keep)),
            cells: None,
        });
    }
    let cells = simulated_cells(&store, source, masks.len())?;
    Ok(Rois {
        masks,
        traces: Some(traces),
        cells: Some(cells),
    })
}

/// Per simulated cell: the visible fraction (from `cells.json`) and whether it spikes.
fn simulated_cells(store: &Store, source: &str, n: usize) -> anyhow::Result<Vec<(f64, bool)>> {
    let text = store
        .get("ground_truth/cells.json")?
        .with_context(|| format!("{source}: ground_truth/cells.json is missing"))?;
    let table: Vec<serde_json::Value> = serde_json::from_slice(&text)
        .with_context(|| format!("{source}: ground_truth/cells.json is not a JSON list"))?;
    if table.len() != n {
        bail!(
            "{source}: ground_truth/cells.json lists {} cells, the footprints {n}",
            table.len()
        );
    }
    let spikes = store
        .read_array::<u8>("ground_truth/spikes")?
        .into_dimensionality::<Ix2>()?;
    if spikes.nrows() != n {
        bail!(
            "{source}: ground_truth/spikes has {} rows for {n} cells",
            spikes.nrows()
        );
    }
    table
        .iter()
        .zip(spikes.rows())
        .enumerate()
        .map(|(i, (c, s))| {
            // Files written before partial cells were kept have no partial cells: all visible.
            let visible = match c.get("visible_fraction") {
                None => 1.0,
                Some(v) => v.as_f64().with_context(|| {
                    format!("{source}: ground_truth/cells.json cell {i}: visible_fraction is not a number")
                })?,
            };
            Ok((visible, s.iter().any(|&k| k > 0)))
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct Report {
    truth: String,
    estimate: String,
    /// Which ground-truth cells count (simulations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    truth_cells: Option<TruthCells>,
    scores: Vec<Score>,
    /// Mean Pearson correlation of matched traces (IoU >= 0.5 matches), when both sides have traces.
    matched_trace_correlation: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let truth =
        load(&args.truth).with_context(|| format!("failed to load ground truth {}", args.truth))?;
    let est = load(&args.estimate)
        .with_context(|| format!("failed to load estimate {}", args.estimate))?;
    let ignored: Vec<bool> = match &truth.cells {
        None => vec![false; truth.masks.len()],
        Some(cells) => cells
            .iter()
            .map(|&(visible, fires)| match args.truth_cells {
                TruthCells::All => false,
                TruthCells::Visible => visible < SCORED_VISIBLE_FRACTION,
                TruthCells::Detectable => visible < SCORED_VISIBLE_FRACTION || !fires,
            })
            .collect(),
    };
    let mut scores = vec![
        score_neurofinder(&truth.masks, &est.masks, args.max_distance).ignoring(&ignored),
        score_caiman(&truth.masks, &est.masks, 10.0, 0.7).ignoring(&ignored),
        score_iou(&truth.masks, &est.masks, 0.5).ignoring(&ignored),
    ];
    let mut matched_trace_correlation = None;
    if let (Some(tt), Some(et)) = (&truth.traces, &est.traces) {
        if tt.ncols() != et.ncols() {
            bail!(
                "traces differ in length: {} frames in the truth, {} in the estimate",
                tt.ncols(),
                et.ncols()
            );
        }
        let s = score_iou_trace(&truth.masks, &est.masks, tt.view(), et.view(), 0.5, 0.5)
            .ignoring(&ignored);
        let iou_pairs = &scores[2].pairs;
        if !iou_pairs.is_empty() {
            let sum: f64 = iou_pairs
                .iter()
                .map(|p| pearson(tt.row(p.truth), et.row(p.estimate)))
                .sum();
            matched_trace_correlation = Some(sum / iou_pairs.len() as f64);
        }
        scores.push(s);
    }
    let report = Report {
        truth: args.truth.clone(),
        estimate: args.estimate.clone(),
        truth_cells: truth.cells.as_ref().map(|_| args.truth_cells),
        scores,
        matched_trace_correlation,
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        // Pairs are long; keep them in JSON but after the summary fields (serde keeps order).
        if let Some(scores) = v.get_mut("scores").and_then(|s| s.as_array_mut()) {
            for s in scores {
                if let Some(obj) = s.as_object_mut()
                    && let Some(pairs) = obj.remove("pairs")
                {
                    obj.insert("pairs".into(), pairs);
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("truth     {} ({} ROIs)", report.truth, truth.masks.len());
    if let (Some(which), Some(s)) = (report.truth_cells, report.scores.first()) {
        let rule = match which {
            TruthCells::Detectable => "cells at least half in the field that fire",
            TruthCells::Visible => "cells at least half in the field",
            TruthCells::All => "every cell",
        };
        println!(
            "counted   {} cells ({rule}); {} don't care (estimates matching them: {} neurofinder, {} IoU)",
            s.n_truth,
            s.ignored_truth,
            s.ignored_estimates,
            report.scores.get(2).map_or(0, |s| s.ignored_estimates)
        );
    }
    println!("estimate  {} ({} ROIs)", report.estimate, est.masks.len());
    println!(
        "{:<14} {:>5} {:>7} {:>9} {:>7}   match rule",
        "convention", "TP", "recall", "precision", "F1"
    );
    for s in &report.scores {
        let rule = match s.convention {
            tessera_kernels::metrics::Convention::Neurofinder => {
                format!("centroids < {} px, greedy", args.max_distance)
            }
            tessera_kernels::metrics::Convention::Caiman => {
                "Hungarian, 1 - IoU < 0.7, centroids <= 10 px".into()
            }
            tessera_kernels::metrics::Convention::Iou50 => "Hungarian, IoU >= 0.5".into(),
            tessera_kernels::metrics::Convention::IouTrace => {
                "Hungarian, IoU > 0.5 and trace r > 0.5".into()
            }
        };
        println!(
            "{:<14} {:>5} {:>7.3} {:>9.3} {:>7.3}   {rule}",
            serde_json::to_value(s.convention)?.as_str().unwrap_or("?"),
            s.true_positives,
            s.recall,
            s.precision,
            s.f1
        );
        if let (Some(i), Some(e)) = (s.inclusion, s.exclusion) {
            println!("{:<14} inclusion {i:.3}, exclusion {e:.3}", "");
        }
    }
    if let Some(c) = report.matched_trace_correlation {
        println!("matched trace correlation (IoU >= 0.5 pairs): {c:.3}");
    }
    Ok(())
}

/// The run's accepted ROIs against `truth` for the report's overlay: tessera evaluate's
/// IoU >= 0.5 Hungarian matching, counting the detectable cells of a simulation (the default
/// convention). Pixels are drawn where a mask's weight is at least 0.2 of its peak.
pub(crate) fn overlay(truth_source: &str, run: &str) -> anyhow::Result<tessera_report::Overlay> {
    let truth = load(truth_source)
        .with_context(|| format!("failed to load ground truth {truth_source}"))?;
    let est = load(run).with_context(|| format!("failed to load the run {run}"))?;
    let ignored: Vec<bool> = match &truth.cells {
        None => vec![false; truth.masks.len()],
        Some(cells) => cells
            .iter()
            .map(|&(visible, fires)| visible < SCORED_VISIBLE_FRACTION || !fires)
            .collect(),
    };
    let raw = score_iou(&truth.masks, &est.masks, 0.5);
    let counted = raw.ignoring(&ignored);
    let mut truth_matched = vec![false; truth.masks.len()];
    let mut estimate_matched = vec![false; est.masks.len()];
    let mut estimate_ignored = vec![false; est.masks.len()];
    for p in &raw.pairs {
        if ignored.get(p.truth).copied().unwrap_or(false) {
            estimate_ignored[p.estimate] = true;
        } else {
            truth_matched[p.truth] = true;
            estimate_matched[p.estimate] = true;
        }
    }
    let pixels = |m: &RoiMask| -> Vec<[u32; 2]> {
        let peak = m.weights.iter().copied().fold(0.0f32, f32::max);
        m.pixels
            .iter()
            .zip(&m.weights)
            .filter(|&(_, &w)| w >= 0.2 * peak)
            .map(|(p, _)| *p)
            .collect()
    };
    Ok(tessera_report::Overlay {
        source: truth_source.to_string(),
        truth: truth.masks.iter().map(pixels).collect(),
        truth_matched,
        truth_ignored: ignored,
        estimates: est.masks.iter().map(pixels).collect(),
        estimate_matched,
        estimate_ignored,
        recall: counted.recall,
        precision: counted.precision,
        f1: counted.f1,
    })
}
