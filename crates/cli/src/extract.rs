//! `tessera extract`: source extraction on one tile (the whole field of view): detection, CNMF
//! demixing, component QC and OASIS deconvolution.
//!
//! Output group:
//! ```text
//! <out>/rois/footprints/{cell,pixel,weight}   sparse footprints (pixel = y * width + x), peak 1
//! <out>/rois/traces        (cell, t) float32   demixed fluorescence at the footprint peak
//! <out>/rois/dff           (cell, t) float32   dF/F: (F - F0) / F0, F = trace + background under the
//!                                              footprint, F0 its running 8th percentile over 30 s
//! <out>/rois/denoised      (cell, t) float32   OASIS calcium (baseline removed)
//! <out>/rois/spikes        (cell, t) float32   OASIS spike amplitudes
//! <out>/rois/accepted      (cell,)   uint8     QC decision
//! <out>/rois/qc.json       per cell: centroid, snr, r_value, size_px, accepted, deconvolution figures
//! <out>/rois/regions.json  accepted cells as neurofinder regions (weight >= 0.2)
//! <out>/summary/{mean,correlation,pnr}   images used for detection
//! ```

use anyhow::{Context, bail};
use ndarray::{Array1, Array2};
use rayon::prelude::*;
use serde_json::json;
use tessera_core::tiling::{PlanInput, StageTiling, TilingKind, plan_tiles};
use tessera_core::{Region, regions_to_json};
use tessera_kernels::deconv::{OasisParams, deconvolve};
use tessera_kernels::extract::tiles::{MergeParams, TileWindow, extract_tiled};
use tessera_kernels::extract::{
    CnmfParams, DetectParams, DetectionImages, Morphology, PixelMovie, QcParams, demix,
    detect_within, quality, refit,
};
use tessera_kernels::register::in_view_fraction;
use tessera_kernels::traces::dff;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub io: crate::transform::Transform,
    /// Expected soma radius in pixels (default: 6 um over the recording's pixel size, else 5 px).
    #[arg(long)]
    pub radius_px: Option<f64>,
    /// Minimum local correlation of a seed (band-passed movie).
    #[arg(long, default_value_t = DetectParams::default().min_corr)]
    pub min_corr: f32,
    /// Minimum peak-to-noise ratio of a seed.
    #[arg(long, default_value_t = DetectParams::default().min_pnr)]
    pub min_pnr: f32,
    /// Merge overlapping components whose traces correlate above this.
    #[arg(long, default_value_t = CnmfParams::default().merge_threshold)]
    pub merge_threshold: f64,
    /// Frames summed before the footprint-membership correlations (default: 100 ms of frames at
    /// the recording's frame rate, else 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub bin_frames: Option<u32>,
    /// Order of the OASIS autoregressive model: 1 (decay only) or 2 (rise and decay; on the CASCADE
    /// recordings with electrophysiology it gives spike rates closer to the truth, docs/ACCURACY.md).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub ar_order: u8,
    /// On a movie written by `tessera register`: seed cells only where the field was in view in at
    /// least this fraction of frames (near the borders, content moves out of view).
    #[arg(long, default_value_t = MIN_IN_VIEW_FRACTION)]
    pub min_in_view: f32,
    /// Shape prior: `soma` (footprints within twice the radius of their seed, size checked by QC)
    /// or `any` (footprints grow wherever the activity correlates: dendrites, axons; no size
    /// ceiling).
    #[arg(long, value_enum, default_value_t = MorphologyArg::Soma)]
    pub morphology: MorphologyArg,
    /// Process the field in spatial tiles with this core edge (px), each read with a halo of twice
    /// the radius, and merge the ROIs across tile edges (ownership, union of duplicates and
    /// pieces, global trace refit). Without it the field is one tile.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..))]
    pub tile_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MorphologyArg {
    Soma,
    Any,
}

/// Frames in about 100 ms, the rise time of GCaMP transients: binning that far keeps a transient's
/// shape while averaging shot noise down.
fn default_bin_frames(frame_rate_hz: Option<f64>) -> usize {
    frame_rate_hz
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(1, |f| (f * BIN_SECONDS).round().clamp(1.0, 64.0) as usize)
}

const BIN_SECONDS: f64 = 0.1;

/// Default of `--min-in-view`.
const MIN_IN_VIEW_FRACTION: f32 = 0.8;

/// For a movie written by `tessera register` (its store holds `registration/shifts`), the fraction
/// of frames in which each pixel showed recorded content; `None` for other recordings.
fn registered_in_view(
    rec: &tessera_io::Recording,
    h: usize,
    w: usize,
) -> anyhow::Result<Option<ndarray::Array2<f32>>> {
    let store = rec.store();
    if store.attributes("registration/shifts")?.is_none() {
        return Ok(None);
    }
    let shifts = store
        .read_array::<f32>("registration/shifts")
        .context("failed to read registration/shifts of the registered input")?
        .into_dimensionality::<ndarray::Ix2>()
        .context("registration/shifts is not a (t, 2) array")?;
    if shifts.ncols() != 2 {
        bail!(
            "registration/shifts has {} columns, expected 2 (dy, dx)",
            shifts.ncols()
        );
    }
    let pairs: Vec<(f32, f32)> = shifts.rows().into_iter().map(|r| (r[0], r[1])).collect();
    Ok(Some(in_view_fraction(&pairs, h, w)))
}

/// Spatial tiles of `tile_px` cores with a halo of twice the radius, from the planner (one
/// spatial stage, the tile size given), and the halo in pixels.
fn tile_windows(
    shape: tessera_core::Shape3,
    chunks: [u64; 3],
    radius: f64,
    tile_px: u64,
) -> anyhow::Result<(Vec<TileWindow>, u64)> {
    let mut stage = StageTiling::new("extract", TilingKind::Spatial, 3.0);
    stage.tile_px = Some(tile_px);
    let plan = plan_tiles(&PlanInput {
        shape,
        chunks,
        cell_radius_px: radius,
        // The tile size is given; the budget only decides whether frames must be binned, which
        // this one-process extraction does not do.
        memory_budget_bytes: u64::MAX / 4,
        stages: vec![stage],
    })?;
    let r = |r: &std::ops::Range<u64>| r.start as usize..r.end as usize;
    let stage = &plan.stages[0];
    let windows = stage
        .tiles
        .iter()
        .map(|t| TileWindow {
            core_y: r(&t.core.y),
            core_x: r(&t.core.x),
            halo_y: r(&t.halo.y),
            halo_x: r(&t.halo.x),
        })
        .collect();
    Ok((windows, stage.halo_px))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rec = args.io.open_input()?;
    let shape = rec.shape();
    let radius = args
        .radius_px
        .or_else(|| {
            rec.meta()
                .pixel_size_um
                .filter(|p| *p > 0.0)
                .map(|p| 6.0 / p)
        })
        .unwrap_or(5.0);
    if !(radius.is_finite() && radius >= 1.0 && radius <= (shape.y.min(shape.x) as f64) / 2.0) {
        bail!(
            "soma radius {radius} px (from {}) must lie between 1 and half the field ({} px)",
            if args.radius_px.is_some() {
                "--radius-px"
            } else {
                "6 um over the recording's pixel size"
            },
            shape.y.min(shape.x) / 2
        );
    }
    let rate = match rec.meta().frame_rate_hz {
        Some(r) if r.is_finite() && r > 0.0 => r,
        Some(r) => bail!(
            "the recording's frame rate {r} Hz is not a positive number (fix its metadata or re-ingest with --frame-rate)"
        ),
        None => 30.0,
    };
    let output = args.io.create_output()?;
    let started = std::time::Instant::now();
    let movie = rec
        .read_box_f32(&shape.full_box())
        .with_context(|| format!("failed to read {}", args.io.uri))?;
    if let Some(((t, y, x), v)) = movie.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!(
            "{} holds a non-finite value ({v}) at frame {t}, pixel ({y}, {x}): extraction needs finite data (crop or fill such pixels first)",
            args.io.uri
        );
    }
    let detect_params = DetectParams {
        radius_px: radius,
        min_corr: args.min_corr,
        min_pnr: args.min_pnr,
        bin_frames: args.bin_frames.map_or_else(
            || default_bin_frames(rec.meta().frame_rate_hz),
            |b| b as usize,
        ),
        morphology: match args.morphology {
            MorphologyArg::Soma => Morphology::Soma,
            MorphologyArg::Any => Morphology::Any,
        },
        ..DetectParams::default()
    };
    // On a registered movie, seed only where the field was in view in enough frames (--min-in-view).
    let in_view = registered_in_view(&rec, shape.y as usize, shape.x as usize)?;
    let seedable = in_view.as_ref().map(|f| f.mapv(|v| v >= args.min_in_view));
    let cnmf_params = CnmfParams {
        search_radius_px: 2.0 * radius,
        merge_threshold: args.merge_threshold,
        ..CnmfParams::default()
    };
    let mean = movie.mean_axis(ndarray::Axis(0)).context("empty movie")?;
    let (pm, comps, bg, images, n_seeds, tiling) = match args.tile_size {
        None => {
            let (found, images) = detect_within(
                movie.view(),
                &detect_params,
                seedable.as_ref().map(|m| m.view()),
            );
            // Detection's working copies are gone; hold the movie once, pixel-major.
            let pm = PixelMovie::from_frames(movie.view());
            drop(movie);
            let n_seeds = found.len();
            let (comps, _) = demix(&pm, found, &cnmf_params);
            // The same final step as the tiled path: traces and background refit from the final
            // footprints, so a tiled and an untiled run differ only where their footprints do.
            let (comps, bg) = refit(&pm, comps, &cnmf_params);
            (pm, comps, bg, images, n_seeds, serde_json::Value::Null)
        }
        Some(tile_px) => {
            let (windows, halo_px) = tile_windows(shape, rec.chunks(), radius, tile_px)?;
            // The tiles read crops of the movie; the refit and QC need it whole, pixel-major.
            let pm = PixelMovie::from_frames(movie.view());
            let merge = MergeParams {
                margin_px: radius / 2.0,
                merge_threshold: args.merge_threshold,
            };
            let r = extract_tiled(
                movie.view(),
                &pm,
                &windows,
                &detect_params,
                seedable.as_ref().map(|m| m.view()),
                &cnmf_params,
                &merge,
            )?;
            drop(movie);
            let report = json!({"tiles": windows.len(), "tile_px": tile_px, "halo_px": halo_px,
                "margin_px": merge.margin_px, "kept_by_ownership": r.kept, "merged_across_tiles": r.merged});
            let images = DetectionImages {
                correlation: r.correlation,
                pnr: r.pnr,
            };
            (pm, r.components, r.background, images, r.seeds, report)
        }
    };
    let mut qc_params = QcParams::for_radius(radius);
    if args.morphology == MorphologyArg::Any {
        // No shape prior: a dendrite may cover any number of pixels.
        qc_params.max_size_px = usize::MAX;
    }
    let qc = quality(&pm, &comps, &bg, &qc_params);
    // A trace OASIS cannot take (e.g. too short) leaves that component's spikes missing (NaN) and
    // says why in qc.json; it does not fail the other components.
    let oasis_params = OasisParams {
        order: args.ar_order as usize,
        ..OasisParams::default()
    };
    let deconv: Vec<_> = comps
        .par_iter()
        .map(|c| deconvolve(&c.trace, rate, &oasis_params))
        .collect();
    let (k, t) = (comps.len(), shape.t as usize);
    // dF/F: the component's trace plus the background under its footprint (weighted mean).
    let window = ((30.0 * rate).round() as usize).max(1);
    let dffs: Vec<Vec<f32>> = comps
        .par_iter()
        .map(|c| {
            let total: f32 = c.weights.iter().sum();
            let mut f = c.trace.clone();
            if total > 0.0 {
                for (&p, &a) in c.pixels.iter().zip(&c.weights) {
                    for j in 0..bg.b.ncols() {
                        let s = a * bg.b[[p as usize, j]] / total;
                        for (fv, &bv) in f.iter_mut().zip(bg.f.row(j)) {
                            *fv += s * bv;
                        }
                    }
                }
            }
            dff(&f, window, 8.0)
        })
        .collect::<Result<_, _>>()?;
    let width = shape.x as usize;

    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "extraction", "input": args.io.uri, "frame_rate_hz": rate,
               "detect": detect_params, "cnmf": cnmf_params, "qc": qc_params, "deconvolution": oasis_params,
               "tiling": tiling}),
    );
    output.write_group(root)?;
    output.write_group_at("summary", serde_json::Map::new())?;
    let none = serde_json::Map::new;
    output.write_array("summary/mean", &mean.into_dyn(), &["y", "x"], none())?;
    output.write_array(
        "summary/correlation",
        &images.correlation.into_dyn(),
        &["y", "x"],
        none(),
    )?;
    output.write_array("summary/pnr", &images.pnr.into_dyn(), &["y", "x"], none())?;
    output.write_group_at("rois", none())?;
    output.write_footprints(
        "rois/footprints",
        width,
        comps.iter().map(|c| (&c.pixels[..], &c.weights[..])),
    )?;
    let rows = |f: &dyn Fn(usize) -> Vec<f32>| {
        let mut a = Array2::<f32>::zeros((k, t));
        for i in 0..k {
            a.row_mut(i).assign(&Array1::from(f(i)));
        }
        a.into_dyn()
    };
    output.write_array(
        "rois/traces",
        &rows(&|i| comps[i].trace.clone()),
        &["cell", "t"],
        none(),
    )?;
    output.write_array(
        "rois/dff",
        &rows(&|i| dffs[i].clone()),
        &["cell", "t"],
        none(),
    )?;
    output.write_array(
        "rois/denoised",
        &rows(&|i| match &deconv[i] {
            Ok(d) => d.calcium.clone(),
            Err(_) => vec![f32::NAN; t],
        }),
        &["cell", "t"],
        none(),
    )?;
    output.write_array(
        "rois/spikes",
        &rows(&|i| match &deconv[i] {
            Ok(d) => d.spikes.clone(),
            Err(_) => vec![f32::NAN; t],
        }),
        &["cell", "t"],
        none(),
    )?;
    let accepted = Array1::from_iter(qc.iter().map(|q| u8::from(q.accepted)));
    output.write_array("rois/accepted", &accepted.into_dyn(), &["cell"], none())?;
    let table: Vec<serde_json::Value> = comps
        .iter()
        .zip(&qc)
        .zip(&deconv)
        .enumerate()
        .map(|(i, ((c, q), d))| {
            let mut row = json!({"id": i, "centroid": c.centroid(width), "snr": q.snr,
                   "r_value": q.r_value, "size_px": q.size_px, "accepted": q.accepted});
            let extra = match d {
                Ok(d) => json!({"baseline": d.baseline, "gamma": d.gamma, "gamma2": d.gamma2,
                                "noise": d.noise, "lambda": d.lambda}),
                Err(e) => json!({"deconvolution_error": e.to_string()}),
            };
            if let (Some(r), Some(x)) = (row.as_object_mut(), extra.as_object()) {
                r.extend(x.clone());
            }
            row
        })
        .collect();
    output.write_file("rois/qc.json", serde_json::to_vec_pretty(&table)?)?;
    let regions: Vec<Region> = comps
        .iter()
        .zip(&qc)
        .filter(|(_, q)| q.accepted)
        .map(|(c, _)| Region {
            coordinates: c
                .pixels
                .iter()
                .zip(&c.weights)
                .filter(|(_, w)| **w >= 0.2)
                .map(|(&p, _)| [p / width as u32, p % width as u32])
                .collect(),
        })
        .collect();
    output.write_file("rois/regions.json", regions_to_json(&regions).into_bytes())?;
    let location = output.finish()?;
    println!(
        "extracted {} components ({} accepted) from {n_seeds} seeds in {}x{}x{} -> {location} in {:.1} s (radius {radius:.1} px)",
        k,
        regions.len(),
        shape.t,
        shape.y,
        shape.x,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
