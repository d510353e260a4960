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
//! <out>/registration/{shifts,peak,clipped,template}   with --register, as `tessera register` writes
//! ```
//!
//! With `--register` the movie is registered in memory first
//! ([`tessera_kernels::register::register_in_place`]); the ROIs are in the recording's own pixel
//! frame, as on a movie written by `tessera register`.

use anyhow::{Context, bail};
use ndarray::{Array1, Array2};
use rayon::prelude::*;
use serde_json::json;
use tessera_core::tiling::{PlanInput, StageTiling, TilingKind, plan_tiles};
use tessera_core::{Region, regions_to_json};
use tessera_kernels::deconv::{OasisParams, deconvolve};
use tessera_kernels::extract::tiles::{MergeParams, TileWindow, extract_tiled};
use tessera_kernels::extract::{
    CnmfParams, DetectParams, DetectionImages, Morphology, QcParams, demix, detect_pixel_major,
    quality, refit,
};
use tessera_kernels::register::{FrameShift, RigidParams, in_view_fraction, register_in_place};
use tessera_kernels::traces::{component_fluorescence, dff};

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
    #[arg(long, default_value_t = DEFAULT_AR_ORDER, value_parser = clap::value_parser!(u8).range(1..=2))]
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
    /// pieces, global trace refit). Without it and without --memory-budget the field is one tile.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..))]
    pub tile_size: Option<u64>,
    /// Memory this process may use (e.g. 2GiB, 500MB): the field is cut into tiles the planner
    /// sizes to fit, each read from the store on its own, and the trace refit and QC stream over
    /// runs of frames, so the movie is never loaded whole (default with --tile-size: 2GiB).
    #[arg(long, value_parser = crate::transform::parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Register the movie first, in memory (rigid phase correlation, the method of `tessera
    /// register`): the recording is read once and no registered copy is written; the shifts and the
    /// template go to <out>/registration. The movie must fit in memory as one tile (not with
    /// --tile-size or --memory-budget: run `tessera register` first).
    #[arg(long)]
    pub register: bool,
    /// With --register: largest shift searched, in pixels.
    #[arg(long, default_value_t = RigidParams::default().max_shift_px, requires = "register")]
    pub max_shift: f64,
    /// With --register: frames sampled to build the template.
    #[arg(long, default_value_t = RigidParams::default().template_frames, requires = "register")]
    pub template_frames: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MorphologyArg {
    Soma,
    Any,
}

/// Default of `--ar-order` (and of the workflow catalogue's `deconvolve.order`).
pub const DEFAULT_AR_ORDER: u8 = 2;

/// Default of `--min-in-view`.
const MIN_IN_VIEW_FRACTION: f32 = tessera_kernels::register::DEFAULT_MIN_IN_VIEW;

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

/// Memory budget of a tiled run given only `--tile-size`: it sizes the runs of frames the refit and
/// QC stream.
const DEFAULT_BUDGET: u64 = 2 << 30;

/// Float32 copies of its halo box a tile holds at once: the movie with detection's filtered copy,
/// then the movie with the pixel-major copy CNMF works on; `--morphology any` adds a high-passed
/// copy during detection (measured in docs/BENCHMARKS.md).
fn tile_copies(morphology: MorphologyArg) -> f64 {
    match morphology {
        MorphologyArg::Soma => 2.0,
        MorphologyArg::Any => 3.0,
    }
}

/// Float32 copies of a run of whole frames the streamed refit and QC hold: the frames as read and
/// their pixel-major transpose (the integer samples decoded before conversion are half a copy,
/// freed before the transpose).
const RUN_COPIES: f64 = 2.0;

/// How a tiled extraction cuts the recording.
#[derive(Debug, Clone)]
struct StreamPlan {
    windows: Vec<TileWindow>,
    tile_px: u64,
    halo_px: u64,
    /// Runs of frames the refit and QC stream over.
    frame_runs: Vec<std::ops::Range<usize>>,
    frames_per_run: u64,
    /// Frames averaged into one in the tiles' movies (1: none), when all frames of even the smallest
    /// tile do not fit the budget (as Suite2p detects on a binned movie); the refit runs at the
    /// full frame rate.
    bin_frames: u64,
}

/// Tiles for detection and demixing (spatial, halo twice the radius; the planner picks the largest
/// core that fits `budget` unless `tile_px` is given) and runs of frames for the streamed refit and
/// QC (temporal, as many frames as fit), both after the fixed reserve.
fn plan_streaming(
    shape: tessera_core::Shape3,
    chunks: [u64; 3],
    radius: f64,
    budget: u64,
    tile_px: Option<u64>,
    morphology: MorphologyArg,
) -> anyhow::Result<StreamPlan> {
    let reserve = tessera_worker::reserve_bytes(shape, radius);
    if budget <= reserve {
        bail!(
            "a memory budget of {:.0} MB leaves nothing for tiles: the {}x{}x{} recording needs about {:.0} MB besides them (images of the field, traces)",
            budget as f64 / 1e6,
            shape.t,
            shape.y,
            shape.x,
            reserve as f64 / 1e6
        );
    }
    let mut tiles = StageTiling::new("extract", TilingKind::Spatial, tile_copies(morphology));
    tiles.tile_px = tile_px;
    let plan = plan_tiles(&PlanInput {
        shape,
        chunks,
        cell_radius_px: radius,
        memory_budget_bytes: budget - reserve,
        stages: vec![
            tiles,
            StageTiling::new("refit", TilingKind::Temporal, RUN_COPIES),
        ],
    })?;
    let (spatial, temporal) = (&plan.stages[0], &plan.stages[1]);
    let r = |r: &std::ops::Range<u64>| r.start as usize..r.end as usize;
    let windows: Vec<TileWindow> = spatial
        .tiles
        .iter()
        .map(|t| TileWindow {
            core_y: r(&t.core.y),
            core_x: r(&t.core.x),
            halo_y: r(&t.halo.y),
            halo_x: r(&t.halo.x),
        })
        .collect();
    let tile_px = windows
        .iter()
        .map(|w| w.core_y.len().max(w.core_x.len()) as u64)
        .max()
        .unwrap_or(0);
    let frame_runs: Vec<_> = temporal.tiles.iter().map(|t| r(&t.core.t)).collect();
    let frames_per_run = frame_runs.iter().map(|f| f.len() as u64).max().unwrap_or(0);
    Ok(StreamPlan {
        windows,
        tile_px,
        halo_px: spatial.halo_px,
        frame_runs,
        frames_per_run,
        bin_frames: spatial.bin_frames,
    })
}

/// Logs (at info, `TESSERA_LOG=info`) the end of a phase of a tiled run: seconds since the start
/// and the peak memory so far.
fn log_phase(phase: &str, started: std::time::Instant) {
    tracing::info!(
        phase,
        seconds = started.elapsed().as_secs_f64(),
        peak_rss_bytes = crate::transform::peak_rss_bytes(),
        "extract"
    );
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = crate::provenance::Started::now();
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
    // On a registered movie, seed only where the field was in view in enough frames (--min-in-view).
    let stored_in_view = registered_in_view(&rec, shape.y as usize, shape.x as usize)?;
    let tiled = args.tile_size.is_some() || args.memory_budget.is_some();
    if args.register && tiled {
        bail!(
            "--register registers the whole movie in memory, so it cannot be combined with --tile-size or --memory-budget: run `tessera register` first and extract from its output"
        );
    }
    if args.register && stored_in_view.is_some() {
        bail!(
            "{} was already registered by `tessera register` (it holds registration/shifts): drop --register",
            args.io.uri
        );
    }
    if !tiled {
        // The whole movie is held in memory: decode buffers may stay in the heap.
        crate::keep_chunk_buffers(&rec);
    }
    let output = args.io.create_output()?;
    let reader = tessera_worker::MovieReader::open(&crate::transform::whole(&rec, &args.io.uri))?;
    let started = std::time::Instant::now();
    let detect_params = DetectParams {
        radius_px: radius,
        min_corr: args.min_corr,
        min_pnr: args.min_pnr,
        bin_frames: args.bin_frames.map_or_else(
            || tessera_worker::default_bin_frames(rec.meta().frame_rate_hz.unwrap_or(0.0)),
            |b| b as usize,
        ),
        morphology: match args.morphology {
            MorphologyArg::Soma => Morphology::Soma,
            MorphologyArg::Any => Morphology::Any,
        },
        ..DetectParams::default()
    };
    let rigid_params = RigidParams {
        max_shift_px: args.max_shift,
        template_frames: args.template_frames,
        ..RigidParams::default()
    };
    let cnmf_params = CnmfParams {
        search_radius_px: 2.0 * radius,
        merge_threshold: args.merge_threshold,
        ..CnmfParams::default()
    };
    let mut qc_params = QcParams::for_radius(radius);
    if args.morphology == MorphologyArg::Any {
        // No shape prior: a dendrite may cover any number of pixels.
        qc_params.max_size_px = usize::MAX;
    }
    let (t, h, w) = (shape.t as usize, shape.y as usize, shape.x as usize);
    let mut registration = None;
    let (comps, bg, qc, images, n_seeds, tiling) = if !tiled {
        let mut movie = reader
            .read(&shape.full_box())
            .with_context(|| format!("failed to read {}", args.io.uri))?;
        if movie.is_empty() {
            bail!("{} has no frames", args.io.uri);
        }
        let in_view = if args.register {
            let (reg, shifts) = register_in_place(movie.view_mut(), &rigid_params)
                .with_context(|| format!("failed to register {}", args.io.uri))?;
            let pairs: Vec<(f32, f32)> = shifts.iter().map(|s| (s.dy, s.dx)).collect();
            registration = Some((reg, shifts));
            Some(in_view_fraction(&pairs, h, w))
        } else {
            stored_in_view
        };
        let seedable = in_view.as_ref().map(|f| f.mapv(|v| v >= args.min_in_view));
        // Detection transposes the movie to pixel-major once and hands that copy on to
        // demixing; the frame-major movie is freed as soon as it is transposed.
        let (found, images, pm) =
            detect_pixel_major(movie, &detect_params, seedable.as_ref().map(|m| m.view()));
        let n_seeds = found.len();
        let (comps, _) = demix(&pm, found, &cnmf_params);
        // The same final step as the tiled path: traces and background refit from the final
        // footprints, so a tiled and an untiled run differ only where their footprints do.
        let (comps, bg) = refit(&pm, comps, &cnmf_params)?;
        let qc = quality(&pm, &comps, &bg, &qc_params, in_view.as_ref())?;
        (comps, bg, qc, images, n_seeds, serde_json::Value::Null)
    } else {
        let in_view = stored_in_view;
        let seedable = in_view.as_ref().map(|f| f.mapv(|v| v >= args.min_in_view));
        let budget = args.memory_budget.unwrap_or(DEFAULT_BUDGET);
        let plan = plan_streaming(
            shape,
            rec.chunks(),
            radius,
            budget,
            args.tile_size,
            args.morphology,
        )?;
        let merge = MergeParams {
            margin_px: radius / 2.0,
            merge_threshold: args.merge_threshold,
        };
        let bin = plan.bin_frames.max(1);
        // On binned tiles, detection's own binning shrinks by the same factor.
        let tile_detect = DetectParams {
            bin_frames: detect_params.bin_frames.div_ceil(bin as usize),
            ..detect_params.clone()
        };
        let mut r = extract_tiled(
            (t.div_ceil(bin as usize), h, w),
            &plan.windows,
            |_, window| -> anyhow::Result<ndarray::Array3<f32>> {
                let r = |r: &std::ops::Range<usize>| r.start as u64..r.end as u64;
                Ok(reader.read_binned(r(&window.halo_y), r(&window.halo_x), bin)?)
            },
            &tile_detect,
            seedable.as_ref().map(|m| m.view()),
            &cnmf_params,
            &merge,
        )?;
        if bin > 1 {
            // The refit starts from the tiles' traces held over each bin's frames.
            for c in &mut r.components {
                c.trace = (0..t)
                    .map(|i| c.trace.get(i / bin as usize).copied().unwrap_or(0.0))
                    .collect();
            }
        }
        log_phase("tiles", started);
        let frames = tessera_worker::MovieFrames::new(&reader, plan.frame_runs.clone());
        let (comps, bg) = refit(&frames, r.components, &cnmf_params)?;
        log_phase("refit", started);
        let qc = quality(&frames, &comps, &bg, &qc_params, in_view.as_ref())?;
        log_phase("qc", started);
        let report = json!({"tiles": plan.windows.len(), "tile_px": plan.tile_px,
                "halo_px": plan.halo_px, "margin_px": merge.margin_px,
                "memory_budget_bytes": budget, "frames_per_run": plan.frames_per_run,
                "tile_bin_frames": bin,
                "kept_by_ownership": r.kept, "merged_across_tiles": r.merged});
        let images = DetectionImages {
            mean: r.mean,
            correlation: r.correlation,
            pnr: r.pnr,
        };
        (comps, bg, qc, images, r.seeds, report)
    };
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
    let fs: Vec<Vec<f32>> = comps
        .par_iter()
        .map(|c| component_fluorescence(c, &bg))
        .collect::<Result<_, _>>()?;
    let dffs: Vec<Vec<f32>> = fs
        .par_iter()
        .map(|f| dff(f, window, 8.0))
        .collect::<Result<_, _>>()?;
    let width = shape.x as usize;

    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "extraction", "input": args.io.uri, "frame_rate_hz": rate,
               "detect": detect_params, "cnmf": cnmf_params, "qc": qc_params, "deconvolution": oasis_params,
               "tiling": tiling,
               "registration": registration.as_ref().map(|_| json!({
                   "method": "rigid phase correlation, in memory", "params": rigid_params}))}),
    );
    output.write_group(root)?;
    let mut moved = String::new();
    if let Some((reg, shifts)) = &registration {
        let n_clipped = tessera_worker::write_registration(&output, shifts, &[], reg.template())?;
        moved = registration_summary(shifts, n_clipped, reg.max_shift_px());
    }
    output.write_group_at("summary", serde_json::Map::new())?;
    let none = serde_json::Map::new;
    output.write_array("summary/mean", &images.mean.into_dyn(), &["y", "x"], none())?;
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
    tessera_worker::write_spike_outputs(&output, t, &fs, &dffs, &deconv)?;
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
    output.set_provenance(crate::provenance::record(
        "extract",
        began,
        &[&args.io.uri],
    )?)?;
    let location = output.finish()?;
    let peak = crate::transform::peak_rss_bytes().map_or_else(String::new, |b| {
        format!(", peak memory {:.0} MB", b as f64 / 1e6)
    });
    println!(
        "extracted {} components ({} accepted) from {n_seeds} seeds in {}x{}x{} -> {location} in {:.1} s (radius {radius:.1} px{moved}{peak})",
        k,
        regions.len(),
        shape.t,
        shape.y,
        shape.x,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `, registered: largest shift ... px` for the summary line of a run with `--register`; warns (on
/// stderr) of frames whose shift hit the limit.
fn registration_summary(shifts: &[FrameShift], n_clipped: usize, limit: f64) -> String {
    let max = shifts
        .iter()
        .map(|s| s.dy.hypot(s.dx))
        .fold(0.0f32, f32::max);
    if n_clipped > 0 {
        eprintln!(
            "warning: {n_clipped} frame(s) hit the shift limit of {limit} px; their motion may be larger (raise --max-shift, up to half the smaller side of the field)"
        );
    }
    format!(", registered: largest shift {max:.2} px")
}
