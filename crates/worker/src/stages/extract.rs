//! Extraction tasks: detection and demixing per spatial tile, the merge across tiles with the
//! global refit, QC and spike inference over the whole field (see the kernels' `extract::tiles`
//! for the method the tiles and the merge follow; `tessera extract` runs the same steps in one
//! process).

use std::ops::Range;

use ndarray::{Array1, Array2, Axis, Ix2, s};
use rayon::prelude::*;
use serde_json::{Value, json};
use tessera_core::{Box3, Region, regions_to_json};
use tessera_io::{Location, Output, Store};
use tessera_kernels::KernelError;
use tessera_kernels::deconv::{Deconvolved, OasisParams, deconvolve as oasis};
use tessera_kernels::extract::tiles::{TileComponent, merge_across_tiles};
use tessera_kernels::extract::{
    CnmfParams, Component, DetectParams, PixelMovie, QcParams, demix as cnmf_demix, detect_within,
    quality, refit,
};
use tessera_kernels::register::in_view_fraction;
use tessera_kernels::traces::{component_fluorescence, dff};

use super::{frames_per_run, given, params_over, write_images};
use crate::{
    Done, MovieFrames, MovieReader, TaskInput, TaskSpec, WorkerError, read_background,
    read_components, write_background, write_components,
};

/// Frames in about 100 ms (the rise time of GCaMP transients), detection's default binning.
pub fn default_bin_frames(frame_rate_hz: f64) -> usize {
    if frame_rate_hz.is_finite() && frame_rate_hz > 0.0 {
        (frame_rate_hz * 0.1).round().clamp(1.0, 64.0) as usize
    } else {
        1
    }
}

/// Default of the detect stage's `min_in_view`.
const MIN_IN_VIEW: f64 = tessera_kernels::register::DEFAULT_MIN_IN_VIEW as f64;

/// Float32 copies of a run of frames the refit and QC hold.
const RUN_COPIES: f64 = 2.0;

/// Footprint weight from which a pixel belongs to a region (CaImAn binarises at 0.2).
const SUPPORT: f32 = 0.2;

fn open(input: &TaskInput) -> Result<Store, WorkerError> {
    Ok(Store::open(&Location::parse(&input.uri)?)?)
}

fn inputs<'a>(spec: &'a TaskSpec, uses: &str) -> Vec<&'a TaskInput> {
    let mut v: Vec<&TaskInput> = spec.inputs.iter().filter(|i| i.uses == uses).collect();
    v.sort_by_key(|i| i.tile.index);
    v
}

fn the_merge(spec: &TaskSpec) -> Result<Store, WorkerError> {
    match spec
        .inputs
        .iter()
        .find(|i| i.uses.ends_with(crate::MERGE_SUFFIX))
    {
        Some(i) => open(i),
        None => Err(WorkerError::Spec(format!(
            "stage `{}` needs the merged ROIs of a demix stage among its inputs",
            spec.uses
        ))),
    }
}

fn urange(r: &Range<u64>) -> Range<usize> {
    r.start as usize..r.end as usize
}

fn contains(b: &Box3, y: usize, x: usize) -> bool {
    urange(&b.y).contains(&y) && urange(&b.x).contains(&x)
}

/// Per pixel, the fraction of frames in which the field was in view, from the registration's
/// shifts of every frame; `None` for a movie that was not registered.
fn in_view(spec: &TaskSpec) -> Result<Option<Array2<f32>>, WorkerError> {
    if spec.shifts.is_empty() {
        return Ok(None);
    }
    let mut pieces = spec.shifts.clone();
    pieces.sort_by_key(|p| p.core.t.start);
    let mut all = Vec::new();
    for p in &pieces {
        let store = Store::open(&Location::parse(&p.uri)?)?;
        let a = store
            .read_array::<f32>("registration/shifts")?
            .into_dimensionality::<Ix2>()
            .map_err(|_| {
                WorkerError::Spec(format!("{}: registration/shifts is not (t, 2)", p.uri))
            })?;
        all.extend(a.outer_iter().map(|r| (r[0], r[1])));
    }
    let shape = spec.movie.shape;
    Ok(Some(in_view_fraction(
        &all,
        shape.y as usize,
        shape.x as usize,
    )))
}

/// Detection parameters with the autos resolved: the run's radius, 100 ms of frames, shrunk by
/// the tile's own binning.
fn detect_params(spec: &TaskSpec, bin: u64) -> Result<DetectParams, WorkerError> {
    let mut p: DetectParams = params_over(spec, DetectParams::default(), &["min_in_view"])?;
    if given(spec, "radius_px").is_none() {
        p.radius_px = spec.context.radius_px;
    }
    if given(spec, "bin_frames").is_none() {
        p.bin_frames = default_bin_frames(spec.context.frame_rate_hz);
    }
    p.bin_frames = p.bin_frames.div_ceil(bin.max(1) as usize).max(1);
    Ok(p)
}

fn cnmf_params(spec: &TaskSpec) -> Result<CnmfParams, WorkerError> {
    let mut p: CnmfParams = params_over(spec, CnmfParams::default(), &[])?;
    if given(spec, "search_radius_px").is_none() {
        p.search_radius_px = 2.0 * spec.context.radius_px;
    }
    Ok(p)
}

/// The images of box `within` (rows, columns) stitched from the cores of `tiles`.
fn stitch(tiles: &[&TaskInput], within: &Box3) -> Result<[Array2<f32>; 3], WorkerError> {
    let (h, w) = (within.y.end - within.y.start, within.x.end - within.x.start);
    let mut imgs = [0, 1, 2].map(|_| Array2::<f32>::zeros((h as usize, w as usize)));
    for t in tiles {
        let store = open(t)?;
        let c = &t.tile.core;
        let (y, x) = (
            c.y.start.max(within.y.start)..c.y.end.min(within.y.end),
            c.x.start.max(within.x.start)..c.x.end.min(within.x.end),
        );
        if y.is_empty() || x.is_empty() {
            continue;
        }
        for (img, name) in imgs.iter_mut().zip(["mean", "correlation", "pnr"]) {
            let a = store
                .read_array::<f32>(&format!("images/{name}"))?
                .into_dimensionality::<Ix2>()
                .map_err(|_| WorkerError::Spec(format!("{}: images/{name} is not 2-D", t.uri)))?;
            let src = a.slice(s![
                (y.start - c.y.start) as usize..(y.end - c.y.start) as usize,
                (x.start - c.x.start) as usize..(x.end - c.x.start) as usize
            ]);
            img.slice_mut(s![
                (y.start - within.y.start) as usize..(y.end - within.y.start) as usize,
                (x.start - within.x.start) as usize..(x.end - within.x.start) as usize
            ])
            .assign(&src);
        }
    }
    Ok(imgs)
}

/// A component found in a tile whose halo starts at (`y0`, `x0`) with `tw` columns, moved to
/// whole-field indices of a field `width` wide.
fn to_field(mut c: Component, y0: usize, x0: usize, tw: usize, width: usize) -> Component {
    for p in &mut c.pixels {
        let (y, x) = (*p as usize / tw, *p as usize % tw);
        *p = ((y0 + y) * width + x0 + x) as u32;
    }
    c.seed = [c.seed[0] + y0, c.seed[1] + x0];
    c
}

fn group_attrs(out: &Output, group: &str, bin: u64) -> Result<(), WorkerError> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("bin_frames".into(), json!(bin));
    out.write_group_at(&format!("{group}/binning"), attrs)?;
    Ok(())
}

fn core_images(
    crop: &ndarray::Array3<f32>,
    corr: &Array2<f32>,
    pnr: &Array2<f32>,
    core: &Box3,
    halo: &Box3,
) -> [(&'static str, Array2<f32>); 3] {
    let (oy, ox) = (
        (core.y.start - halo.y.start) as usize,
        (core.x.start - halo.x.start) as usize,
    );
    let (ny, nx) = (
        (core.y.end - core.y.start) as usize,
        (core.x.end - core.x.start) as usize,
    );
    let sl = s![oy..oy + ny, ox..ox + nx];
    let mean = crop
        .slice(s![.., oy..oy + ny, ox..ox + nx])
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array2::zeros((ny, nx)));
    [
        ("mean", mean),
        ("correlation", corr.slice(sl).to_owned()),
        ("pnr", pnr.slice(sl).to_owned()),
    ]
}

pub(super) fn detect(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let w = spec.movie.shape.x as usize;
    let bin = spec.bin_frames.max(1);
    let params = detect_params(spec, bin)?;
    let min_in_view = given(spec, "min_in_view")
        .and_then(Value::as_f64)
        .unwrap_or(MIN_IN_VIEW);
    let (core, halo) = (&spec.tile.core, &spec.tile.halo);
    let crop = reader.read_binned(halo.y.clone(), halo.x.clone(), bin)?;
    let mask = in_view(spec)?.map(|f| f.mapv(|v| f64::from(v) >= min_in_view));
    let mask = mask
        .as_ref()
        .map(|m| m.slice(s![urange(&halo.y), urange(&halo.x)]));
    let (found, images) = detect_within(crop.view(), &params, mask);
    let (y0, x0, tw) = (
        halo.y.start as usize,
        halo.x.start as usize,
        (halo.x.end - halo.x.start) as usize,
    );
    let comps: Vec<Component> = found
        .into_iter()
        .map(|c| to_field(c, y0, x0, tw, w))
        .collect();
    write_components(out, "components", w, crop.dim().0, &comps)?;
    group_attrs(out, "components", bin)?;
    write_images(
        out,
        "images",
        core_images(&crop, &images.correlation, &images.pnr, core, halo),
    )?;
    Ok(Done {
        figures: json!({"seeds": comps.len(), "bin_frames": bin, "radius_px": params.radius_px}),
        publishes: Vec::new(),
    })
}

pub(super) fn demix(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let w = spec.movie.shape.x as usize;
    let bin = spec.bin_frames.max(1);
    let params = cnmf_params(spec)?;
    let (core, halo) = (&spec.tile.core, &spec.tile.halo);
    let detects = inputs(spec, "detect");
    if detects.is_empty() {
        return Err(WorkerError::Spec(
            "a demix task needs the detect tiles it meets among its inputs".into(),
        ));
    }
    let crop = reader.read_binned(halo.y.clone(), halo.x.clone(), bin)?;
    let frames = crop.dim().0;
    let (y0, x0) = (halo.y.start as usize, halo.x.start as usize);
    let (th, tw) = (
        (halo.y.end - halo.y.start) as usize,
        (halo.x.end - halo.x.start) as usize,
    );
    // Candidates: those of each detect tile it meets that the tile owns (seed in its core) and
    // whose seed lies in this halo, clipped to the halo, in this halo's pixel indices.
    let mut found = Vec::new();
    for d in &detects {
        for c in read_components(&open(d)?, "components")? {
            let [sy, sx] = c.seed;
            if !(contains(&d.tile.core, sy, sx) && contains(halo, sy, sx)) {
                continue;
            }
            let (mut pixels, mut weights) = (Vec::new(), Vec::new());
            for (&p, &wt) in c.pixels.iter().zip(&c.weights) {
                let (y, x) = (p as usize / w, p as usize % w);
                if (y0..y0 + th).contains(&y) && (x0..x0 + tw).contains(&x) {
                    pixels.push(((y - y0) * tw + (x - x0)) as u32);
                    weights.push(wt);
                }
            }
            if pixels.is_empty() {
                continue;
            }
            found.push(Component {
                pixels,
                weights,
                trace: if c.trace.len() == frames {
                    c.trace
                } else {
                    Vec::new()
                },
                seed: [sy - y0, sx - x0],
            });
        }
    }
    let candidates = found.len();
    let pm = PixelMovie::from_frames(crop.view());
    drop(crop);
    let (comps, _) = cnmf_demix(&pm, found, &params);
    drop(pm);
    // Ownership: centroid within the core widened by half a radius (see kernels' extract::tiles).
    let margin = spec.context.radius_px / 2.0;
    let within = |v: f64, r: &Range<u64>| v >= r.start as f64 - margin && v < r.end as f64 + margin;
    let kept: Vec<Component> = comps
        .into_iter()
        .map(|c| to_field(c, y0, x0, tw, w))
        .filter(|c| {
            let [cy, cx] = c.centroid(w);
            within(cy, &core.y) && within(cx, &core.x)
        })
        .collect();
    write_components(out, "components", w, frames, &kept)?;
    group_attrs(out, "components", bin)?;
    let [mean, corr, pnr] = stitch(&detects, core)?;
    write_images(
        out,
        "images",
        [("mean", mean), ("correlation", corr), ("pnr", pnr)],
    )?;
    Ok(Done {
        figures: json!({"candidates": candidates, "kept": kept.len()}),
        publishes: Vec::new(),
    })
}

pub(super) fn merge(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let shape = reader.shape();
    let (t, h, w) = (shape.t as usize, shape.y as usize, shape.x as usize);
    let params = cnmf_params(spec)?;
    let base = spec.uses.trim_end_matches(crate::MERGE_SUFFIX);
    let tiles = inputs(spec, base);
    let mut candidates = Vec::new();
    for tile in &tiles {
        let store = open(tile)?;
        let bin = store
            .attributes("components/binning")?
            .and_then(|a| a.get("bin_frames").and_then(Value::as_u64))
            .unwrap_or(1)
            .max(1) as usize;
        for mut c in read_components(&store, "components")? {
            if bin > 1 {
                // The refit starts from the tile's traces held over each bin's frames.
                c.trace = (0..t)
                    .map(|i| c.trace.get(i / bin).copied().unwrap_or(0.0))
                    .collect();
            }
            candidates.push(TileComponent {
                tile: tile.tile.index,
                component: c,
            });
        }
    }
    let kept = candidates.len();
    let merged = merge_across_tiles(candidates, h * w, w, params.merge_threshold);
    let merges = kept - merged.len();
    let frames = MovieFrames::new(&reader, reader.frame_runs(frames_per_run(spec, RUN_COPIES)));
    let (comps, bg) = refit(&frames, merged, &params)?;
    out.write_group_at("rois", serde_json::Map::new())?;
    write_components(out, "rois", w, t, &comps)?;
    write_background(out, "rois/background", &bg)?;
    let accepted = Array1::from_elem(comps.len(), 1u8);
    out.write_array(
        "rois/accepted",
        &accepted.into_dyn(),
        &["cell"],
        serde_json::Map::new(),
    )?;
    let all: Vec<bool> = vec![true; comps.len()];
    out.write_file("rois/regions.json", regions(&comps, &all, w).into_bytes())?;
    let field = Box3 {
        t: 0..shape.t,
        y: 0..shape.y,
        x: 0..shape.x,
    };
    let [mean, corr, pnr] = stitch(&tiles, &field)?;
    write_images(
        out,
        "summary",
        [("mean", mean), ("correlation", corr), ("pnr", pnr)],
    )?;
    Ok(Done {
        figures: json!({"tiles": tiles.len(), "kept_by_ownership": kept,
                        "merged_across_tiles": merges, "components": comps.len(),
                        "frames_per_run": frames.runs().first().map_or(0, |r| r.len())}),
        publishes: vec![
            "rois/footprints",
            "rois/traces",
            "rois/seeds",
            "rois/background",
            "rois/accepted",
            "rois/regions.json",
            "summary/mean",
            "summary/correlation",
            "summary/pnr",
        ],
    })
}

/// Accepted components as neurofinder regions (pixels with weight >= 0.2).
fn regions(comps: &[Component], accepted: &[bool], width: usize) -> String {
    let regions: Vec<Region> = comps
        .iter()
        .zip(accepted)
        .filter(|(_, a)| **a)
        .map(|(c, _)| Region {
            coordinates: c
                .pixels
                .iter()
                .zip(&c.weights)
                .filter(|(_, w)| **w >= SUPPORT)
                .map(|(&p, _)| [p / width as u32, p % width as u32])
                .collect(),
        })
        .collect();
    regions_to_json(&regions)
}

pub(super) fn qc(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let w = reader.shape().x as usize;
    let store = the_merge(spec)?;
    let comps = read_components(&store, "rois")?;
    let bg = read_background(&store, "rois/background")?;
    let mut base = QcParams::for_radius(spec.context.radius_px);
    if spec.context.morphology == "any" {
        // No shape prior: a dendrite may cover any number of pixels.
        base.max_size_px = usize::MAX;
    }
    let params: QcParams = params_over(spec, base, &[])?;
    let frames = MovieFrames::new(&reader, reader.frame_runs(frames_per_run(spec, RUN_COPIES)));
    let reports = quality(&frames, &comps, &bg, &params, in_view(spec)?.as_ref())?;
    let accepted: Vec<bool> = reports.iter().map(|q| q.accepted).collect();
    out.write_group_at("rois", serde_json::Map::new())?;
    out.write_array(
        "rois/accepted",
        &Array1::from_iter(accepted.iter().map(|&a| u8::from(a))).into_dyn(),
        &["cell"],
        serde_json::Map::new(),
    )?;
    let table: Vec<Value> = comps
        .iter()
        .zip(&reports)
        .enumerate()
        .map(|(i, (c, q))| {
            json!({"id": i, "centroid": c.centroid(w), "snr": q.snr, "r_value": q.r_value,
                   "size_px": q.size_px, "accepted": q.accepted})
        })
        .collect();
    out.write_file(
        "rois/qc.json",
        serde_json::to_vec_pretty(&table).map_err(|e| WorkerError::Spec(e.to_string()))?,
    )?;
    out.write_file(
        "rois/regions.json",
        regions(&comps, &accepted, w).into_bytes(),
    )?;
    let n = accepted.iter().filter(|&&a| a).count();
    Ok(Done {
        figures: json!({"components": comps.len(), "accepted": n, "params": params}),
        publishes: vec!["rois/accepted", "rois/qc.json", "rois/regions.json"],
    })
}

/// Writes `rois/fluorescence`, `rois/dff`, `rois/denoised` and `rois/spikes` ((cell, t)
/// float32); a component whose deconvolution failed has NaN rows of calcium and spikes.
pub fn write_spike_outputs(
    out: &Output,
    t: usize,
    fluorescence: &[Vec<f32>],
    dffs: &[Vec<f32>],
    deconv: &[Result<Deconvolved, KernelError>],
) -> Result<(), WorkerError> {
    fn rows<'a>(
        k: usize,
        t: usize,
        f: impl Fn(usize) -> Option<&'a [f32]>,
    ) -> ndarray::ArrayD<f32> {
        let mut a = Array2::<f32>::from_elem((k, t), f32::NAN);
        for (i, mut row) in a.outer_iter_mut().enumerate() {
            if let Some(v) = f(i) {
                for (d, &x) in row.iter_mut().zip(v) {
                    *d = x;
                }
            }
        }
        a.into_dyn()
    }
    let k = deconv.len();
    let none = serde_json::Map::new;
    let dims = ["cell", "t"];
    let f = rows(k, t, |i| fluorescence.get(i).map(|v| &v[..]));
    out.write_array("rois/fluorescence", &f, &dims, none())?;
    let dff = rows(k, t, |i| dffs.get(i).map(|v| &v[..]));
    out.write_array("rois/dff", &dff, &dims, none())?;
    let calcium = rows(k, t, |i| deconv[i].as_ref().ok().map(|d| &d.calcium[..]));
    out.write_array("rois/denoised", &calcium, &dims, none())?;
    let spikes = rows(k, t, |i| deconv[i].as_ref().ok().map(|d| &d.spikes[..]));
    out.write_array("rois/spikes", &spikes, &dims, none())?;
    Ok(())
}

pub(super) fn deconvolve(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let store = the_merge(spec)?;
    let comps = read_components(&store, "rois")?;
    let bg = read_background(&store, "rois/background")?;
    let params: OasisParams = params_over(spec, OasisParams::default(), &[])?;
    let rate = spec.context.frame_rate_hz;
    let t = spec.movie.shape.t as usize;
    // A trace OASIS cannot take leaves that component's spikes NaN and says why; it does not fail
    // the others.
    let deconv: Vec<_> = comps
        .par_iter()
        .map(|c| oasis(&c.trace, rate, &params))
        .collect();
    // dF/F of the trace plus the background under the footprint (weighted mean), baseline its
    // running 8th percentile over 30 s.
    let window = ((30.0 * rate).round() as usize).max(1);
    let fs: Vec<Vec<f32>> = comps
        .par_iter()
        .map(|c| component_fluorescence(c, &bg))
        .collect::<Result<_, _>>()?;
    let dffs: Vec<Vec<f32>> = fs
        .par_iter()
        .map(|f| dff(f, window, 8.0))
        .collect::<Result<_, _>>()?;
    let k = comps.len();
    out.write_group_at("rois", serde_json::Map::new())?;
    write_spike_outputs(out, t, &fs, &dffs, &deconv)?;
    let table: Vec<Value> = deconv
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Ok(d) => json!({"id": i, "baseline": d.baseline, "gamma": d.gamma,
                            "gamma2": d.gamma2, "noise": d.noise, "lambda": d.lambda}),
            Err(e) => json!({"id": i, "deconvolution_error": e.to_string()}),
        })
        .collect();
    out.write_file(
        "rois/deconvolution.json",
        serde_json::to_vec_pretty(&table).map_err(|e| WorkerError::Spec(e.to_string()))?,
    )?;
    let failed = deconv.iter().filter(|d| d.is_err()).count();
    Ok(Done {
        figures: json!({"components": k, "failed": failed, "frame_rate_hz": rate,
                        "order": params.order}),
        publishes: vec![
            "rois/fluorescence",
            "rois/dff",
            "rois/denoised",
            "rois/spikes",
            "rois/deconvolution.json",
        ],
    })
}
