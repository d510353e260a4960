//! A ground-truth simulator for two-photon (and one-photon-like) calcium imaging, in the spirit of
//! NAOMi (Song, Gauthier, Pillow, Tank & Charles 2021) but built for speed: the scene is a sum of
//! explicit sources, rendered frame by frame in parallel.
//!
//! Generative model, per frame `t` and pixel `p` of a canvas slightly larger than the field of view:
//!
//! ```text
//! lambda_t(p) = bg(p) + np(p) * (1 + fluct * sum_k m_k(p) h_k(t) / sqrt(K))   background + neuropil
//!             + sum_i a_i(p) * F_i(t)                                          somata
//! F_i(t)      = f0_i * (1 + dff_i(t)),  dff_i = c_i / (1 + c_i / sat)          indicator saturation
//! c_i(t)      = A_i * sum_s h(t - t_s),  h(t) = (e^{-t/decay} - e^{-t/rise}) / peak
//! frame_t(y, x) = lambda_t(y + m - dy_t, x + m - dx_t)   (bilinear; rigid motion (dy, dx))
//! adu         = gain * Poisson(frame_t) + N(0, read^2) + offset   (rounded, clipped to uint16)
//! ```
//!
//! Footprints `a_i` are soft ellipses (peak 1) with a nuclear shadow, sizes log-normal around the
//! preset radius, placed with a bounded overlap. Spikes are Poisson with per-cell log-normal rates,
//! bursts, silent cells, and a slow shared modulation of rates among groups of cells. `m_k` are smooth
//! random fields and `h_k` slow AR(1) processes; blood vessels darken the neuropil along a few bands.
//!
//! Determinism: every random draw comes from [`crate::rng::Rng`] streams keyed by the seed and by
//! a purpose (cell `i`, frame `t`, ...), so a frame's pixels do not depend on how frames are split
//! between threads or chunks.

mod config;

pub use config::{Indicator, PRESETS, SimConfig};

use ndarray::{Array2, Array3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::KernelError;
use crate::rng::Rng;

// Purposes of the random streams (the high bits keep the families apart).
const STREAM_LAYOUT: u64 = 1 << 40;
const STREAM_CELL: u64 = 2 << 40;
const STREAM_SHARED: u64 = 3 << 40;
const STREAM_NEUROPIL: u64 = 4 << 40;
const STREAM_MOTION: u64 = 5 << 40;
const STREAM_FRAME: u64 = 6 << 40;
const STREAM_DENDRITE: u64 = 7 << 40;

/// Number of groups of cells that share a slow rate modulation.
const SHARED_GROUPS: usize = 4;
/// Footprint weights below this (relative to the peak of 1) are dropped.
const FOOTPRINT_FLOOR: f32 = 0.02;
/// Weight above which a pixel belongs to a cell's neurofinder region (CaImAn binarises at 0.2 x max).
pub const REGION_THRESHOLD: f32 = 0.2;

/// A sparse footprint on a 2-D grid: pixel indices (row-major) and weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseFootprint {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
}

/// What a simulated source is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// A soma: a soft ellipse with a nuclear shadow.
    #[default]
    Soma,
    /// A dendritic segment: a thin curved tube.
    Dendrite,
}

/// One simulated source (soma or dendritic segment) as the ground truth reports it, in
/// field-of-view coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GtCell {
    /// Index into the ground-truth arrays (rows of `fluorescence`, `dff`, `spikes`).
    pub id: usize,
    #[serde(default)]
    pub kind: CellKind,
    /// Centre (row, col), in pixels, in the reference (motion-free) frame (a dendrite's
    /// footprint-weighted centroid).
    pub center: [f64; 2],
    /// Soma radius; a dendrite's cross-section sigma.
    pub radius_px: f64,
    /// False for cells that never fire.
    pub active: bool,
    pub rate_hz: f64,
    /// Resting photons per frame at the footprint's peak.
    pub baseline_photons: f64,
    /// Fraction of the footprint's weight inside the field of view.
    pub visible_fraction: f64,
    pub footprint: SparseFootprint,
}

/// A cell counts in accuracy scores when at least this fraction of its footprint's weight lies in
/// the field of view; cells cut further by the border are "don't care" (see [`GroundTruth::scored`]).
pub const SCORED_VISIBLE_FRACTION: f64 = 0.5;

/// Ground truth of a simulation: every cell with pixels in the field of view.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub cells: Vec<GtCell>,
    /// Noise-free fluorescence `F_i(t)` in photons at the footprint peak, shape (cells, frames).
    pub fluorescence: Array2<f32>,
    /// Noise-free `dF/F_i(t)`, shape (cells, frames).
    pub dff: Array2<f32>,
    /// Spike counts per frame, shape (cells, frames).
    pub spikes: Array2<u8>,
    /// Rigid motion `(dy, dx)` per frame in pixels, shape (frames, 2): frame `t` shows the reference
    /// scene displaced by `(+dy, +dx)`, so registration must shift it by `(-dy, -dx)`.
    pub motion: Array2<f32>,
}

impl GroundTruth {
    /// Which cells an accuracy score counts, by the rule `tessera evaluate` applies: at least
    /// [`SCORED_VISIBLE_FRACTION`] of the footprint in the field and, when `active_only`, at least
    /// one spike in the recording (a cell that never fires is invisible to any activity-based
    /// method). The others are "don't care": matching one is neither a hit nor a false positive.
    pub fn scored(&self, active_only: bool) -> Vec<bool> {
        self.cells
            .iter()
            .map(|c| {
                c.visible_fraction >= SCORED_VISIBLE_FRACTION
                    && (!active_only || self.spikes.row(c.id).iter().any(|&s| s > 0))
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct CanvasCell {
    kind: CellKind,
    center: [f64; 2],
    radius: f64,
    /// Footprint on the canvas.
    footprint: SparseFootprint,
    active: bool,
    rate_hz: f64,
    baseline: f64,
}

/// A fully specified simulation: layout, traces and motion are drawn up front (they are small);
/// pixels are rendered on demand, any range of frames at a time.
#[derive(Debug, Clone)]
pub struct Simulation {
    config: SimConfig,
    margin: usize,
    canvas: (usize, usize),
    cells: Vec<CanvasCell>,
    /// F_i(t) in photons, (cells, frames).
    fluorescence: Array2<f32>,
    dff: Array2<f32>,
    spikes: Array2<u8>,
    /// (frames, 2)
    motion: Array2<f32>,
    /// Static background + resting neuropil, canvas-sized, row-major.
    static_light: Vec<f32>,
    /// Neuropil fluctuation maps, (K, canvas pixels), already scaled by np(p) * fluct / sqrt(K).
    neuropil_maps: Array2<f32>,
    /// Neuropil temporal factors, (K, frames).
    neuropil_time: Array2<f32>,
}

impl Simulation {
    /// Draws the layout, spikes, traces, neuropil and motion of a simulation.
    pub fn new(config: SimConfig) -> Result<Simulation, KernelError> {
        config.validate()?;
        let margin = config.margin_px();
        let canvas = (config.height + 2 * margin, config.width + 2 * margin);
        let mut cells = place_cells(&config, canvas);
        // Dendrites come after the somata, so adding them leaves every soma's draws unchanged.
        cells.extend(place_dendrites(&config, canvas));
        let (fluorescence, dff, spikes) = simulate_activity(&config, &cells);
        let (static_light, neuropil_maps) = neuropil_fields(&config, canvas);
        let neuropil_time = ar1_processes(
            config.neuropil_rank,
            config.frames,
            (-1.0 / (config.neuropil_timescale_s * config.frame_rate_hz)).exp(),
            config.seed,
            STREAM_NEUROPIL + 1000,
        );
        let motion = simulate_motion(&config, margin);
        Ok(Simulation {
            config,
            margin,
            canvas,
            cells,
            fluorescence,
            dff,
            spikes,
            motion,
            static_light,
            neuropil_maps,
            neuropil_time,
        })
    }

    /// The configuration this simulation was built from.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Shape of the movie `(frames, height, width)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.config.frames, self.config.height, self.config.width)
    }

    /// Renders frames `start..end` (clamped to the movie) as uint16 detector counts, in parallel.
    pub fn render(&self, start: usize, end: usize) -> Array3<u16> {
        let end = end.min(self.config.frames);
        let start = start.min(end);
        let (h, w) = (self.config.height, self.config.width);
        let mut out = Array3::<u16>::zeros((end - start, h, w));
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut frame)| {
                let t = start + i;
                let pixels = self.render_frame(t);
                for (dst, src) in frame.iter_mut().zip(pixels) {
                    *dst = src;
                }
            });
        out
    }

    /// Expected photons per pixel of frame `t` (noise-free, after motion), row-major.
    pub fn expected_photons(&self, t: usize) -> Vec<f32> {
        let (ch, cw) = self.canvas;
        let mut scene = self.static_light.clone();
        for k in 0..self.neuropil_maps.nrows() {
            let h = self.neuropil_time[[k, t]];
            for (s, m) in scene.iter_mut().zip(self.neuropil_maps.row(k)) {
                *s += m * h;
            }
        }
        for (i, cell) in self.cells.iter().enumerate() {
            let f = self.fluorescence[[i, t]];
            for (&p, &wt) in cell.footprint.pixels.iter().zip(&cell.footprint.weights) {
                scene[p as usize] += wt * f;
            }
        }
        for s in &mut scene {
            *s = s.max(0.0);
        }
        let (h, w) = (self.config.height, self.config.width);
        let dy = f64::from(self.motion[[t, 0]]);
        let dx = f64::from(self.motion[[t, 1]]);
        let m = self.margin as f64;
        let mut out = Vec::with_capacity(h * w);
        // Source position of output pixel (y, x): (y + m - dy, x + m - dx); split into integer and
        // fractional parts once per frame (the shift is the same for every pixel).
        let sy = m - dy;
        let sx = m - dx;
        let (iy0, fy) = (sy.floor() as isize, (sy - sy.floor()) as f32);
        let (ix0, fx) = (sx.floor() as isize, (sx - sx.floor()) as f32);
        let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        for y in 0..h {
            let r0 = clamp(y as isize + iy0, ch);
            let r1 = clamp(y as isize + iy0 + 1, ch);
            let row0 = &scene[r0 * cw..(r0 + 1) * cw];
            let row1 = &scene[r1 * cw..(r1 + 1) * cw];
            for x in 0..w {
                let c0 = clamp(x as isize + ix0, cw);
                let c1 = clamp(x as isize + ix0 + 1, cw);
                let top = row0[c0] * (1.0 - fx) + row0[c1] * fx;
                let bottom = row1[c0] * (1.0 - fx) + row1[c1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
        out
    }

    fn render_frame(&self, t: usize) -> Vec<u16> {
        let lambda = self.expected_photons(t);
        let mut rng = Rng::new(self.config.seed, STREAM_FRAME + t as u64);
        let gain = self.config.gain_adu_per_photon;
        let read = self.config.read_noise_adu;
        let offset = self.config.offset_adu;
        lambda
            .into_iter()
            .map(|l| {
                let photons = rng.poisson(f64::from(l));
                let adu = gain * photons + read * rng.normal() + offset;
                // Round half up and clip to the detector's range (the cast truncates).
                (adu + 0.5).clamp(0.0, f64::from(u16::MAX)) as u16
            })
            .collect()
    }

    /// Ground truth for every cell with at least one pixel in the field of view. Cells cut by the
    /// border keep only their visible pixels; [`GroundTruth::scored`] says which cells a score
    /// should count.
    pub fn ground_truth(&self) -> GroundTruth {
        let (h, w) = (self.config.height, self.config.width);
        let (_, cw) = self.canvas;
        let m = self.margin;
        let mut cells = Vec::new();
        let mut rows = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            let total: f32 = c.footprint.weights.iter().sum();
            let mut fp = SparseFootprint::default();
            for (&p, &wt) in c.footprint.pixels.iter().zip(&c.footprint.weights) {
                let (cy, cx) = (p as usize / cw, p as usize % cw);
                if cy >= m && cy < m + h && cx >= m && cx < m + w {
                    fp.pixels.push(((cy - m) * w + (cx - m)) as u32);
                    fp.weights.push(wt);
                }
            }
            let visible: f32 = fp.weights.iter().sum();
            let visible_fraction = if total > 0.0 {
                f64::from(visible / total)
            } else {
                0.0
            };
            if fp.pixels.is_empty() {
                continue;
            }
            rows.push(i);
            cells.push(GtCell {
                id: cells.len(),
                kind: c.kind,
                center: [c.center[0] - m as f64, c.center[1] - m as f64],
                radius_px: c.radius,
                active: c.active,
                rate_hz: c.rate_hz,
                baseline_photons: c.baseline,
                visible_fraction,
                footprint: fp,
            });
        }
        GroundTruth {
            cells,
            fluorescence: self.fluorescence.select(Axis(0), &rows),
            dff: self.dff.select(Axis(0), &rows),
            spikes: self.spikes.select(Axis(0), &rows),
            motion: self.motion.clone(),
        }
    }
}

/// Soft-ellipse footprint with a nuclear shadow, peak weight 1, on a canvas of width `cw`.
fn soma_footprint(
    center: [f64; 2],
    radius: f64,
    elongation: f64,
    angle: f64,
    nucleus_depth: f64,
    canvas: (usize, usize),
) -> SparseFootprint {
    let (ch, cw) = canvas;
    let a = radius * elongation.sqrt();
    let b = radius / elongation.sqrt();
    let (sin, cos) = angle.sin_cos();
    let edge = 0.5 / radius; // soft edge of about half a pixel, in units of the radius
    let reach = (a.max(b) + 2.0).ceil() as isize;
    let (cy, cx) = (center[0].round() as isize, center[1].round() as isize);
    let mut fp = SparseFootprint::default();
    let mut peak = 0.0f32;
    for y in (cy - reach).max(0)..(cy + reach + 1).min(ch as isize) {
        for x in (cx - reach).max(0)..(cx + reach + 1).min(cw as isize) {
            let dy = y as f64 - center[0];
            let dx = x as f64 - center[1];
            let u = dy * cos + dx * sin;
            let v = -dy * sin + dx * cos;
            let rho = ((u / a).powi(2) + (v / b).powi(2)).sqrt();
            let body = 1.0 / (1.0 + ((rho - 1.0) / edge).exp());
            let nucleus = 1.0 - nucleus_depth * (-(rho / 0.45).powi(2)).exp();
            let wt = (body * nucleus) as f32;
            if wt >= FOOTPRINT_FLOOR {
                fp.pixels.push((y as usize * cw + x as usize) as u32);
                fp.weights.push(wt);
                peak = peak.max(wt);
            }
        }
    }
    if peak > 0.0 {
        for wt in &mut fp.weights {
            *wt /= peak;
        }
    }
    fp
}

/// Places somata uniformly on the canvas, rejecting overlaps beyond `max_overlap` (bucket grid).
fn place_cells(config: &SimConfig, canvas: (usize, usize)) -> Vec<CanvasCell> {
    let (ch, cw) = canvas;
    let area_mm2 = (ch * cw) as f64 * (config.pixel_size_um * 1e-3).powi(2);
    let target = (config.cell_density_per_mm2 * area_mm2).round() as usize;
    let r0 = config.soma_radius_px();
    let sigma = (1.0 + config.soma_radius_cv.powi(2)).ln().sqrt();
    let r_max = r0 * (3.0 * sigma).exp();
    let bucket = (2.0 * r_max).max(1.0);
    let (by, bx) = (
        (ch as f64 / bucket).ceil() as usize + 1,
        (cw as f64 / bucket).ceil() as usize + 1,
    );
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); by * bx];
    let mut rng = Rng::new(config.seed, STREAM_LAYOUT);
    let mut placed: Vec<([f64; 2], f64)> = Vec::with_capacity(target.min(ch * cw));
    let mut attempts = 0usize;
    while placed.len() < target && attempts < 50 * target.max(1) {
        attempts += 1;
        let c = [rng.range(0.0, ch as f64), rng.range(0.0, cw as f64)];
        let r = (r0 * (sigma * rng.normal()).exp()).clamp(0.5 * r0, r_max);
        let (gy, gx) = ((c[0] / bucket) as usize, (c[1] / bucket) as usize);
        let mut ok = true;
        'search: for ny in gy.saturating_sub(1)..(gy + 2).min(by) {
            for nx in gx.saturating_sub(1)..(gx + 2).min(bx) {
                for &j in &grid[ny * bx + nx] {
                    let (cj, rj) = placed[j];
                    let d = ((c[0] - cj[0]).powi(2) + (c[1] - cj[1]).powi(2)).sqrt();
                    if d < r + rj - config.max_overlap * r.min(rj) {
                        ok = false;
                        break 'search;
                    }
                }
            }
        }
        if ok {
            grid[gy * bx + gx].push(placed.len());
            placed.push((c, r));
        }
    }
    placed
        .into_iter()
        .enumerate()
        .map(|(i, (center, radius))| {
            let mut r = Rng::new(config.seed, STREAM_CELL + i as u64);
            let elongation = r.range(1.0, config.max_elongation);
            let angle = r.range(0.0, std::f64::consts::PI);
            let active = r.uniform() >= config.silent_fraction;
            let rate_hz = if active {
                r.lognormal(config.rate_hz_median, config.rate_log_sigma)
            } else {
                0.0
            };
            let baseline = config.cell_photons * r.lognormal(1.0, 0.3);
            CanvasCell {
                kind: CellKind::Soma,
                center,
                radius,
                footprint: soma_footprint(
                    center,
                    radius,
                    elongation,
                    angle,
                    config.nucleus_depth,
                    canvas,
                ),
                active,
                rate_hz,
                baseline,
            }
        })
        .collect()
}

/// Dendritic segments at `dendrite_density_per_mm2`: each a path grown both ways from a uniform
/// random point in 0.5-px steps whose heading wanders (sd 0.04 rad per step), until it reaches
/// `dendrite_length_um` or the canvas edge, with a Gaussian cross-section (sigma = width / 2).
/// Every segment is active; resting brightness is 60% of a soma's.
fn place_dendrites(config: &SimConfig, canvas: (usize, usize)) -> Vec<CanvasCell> {
    let (ch, cw) = canvas;
    let area_mm2 = (ch * cw) as f64 * (config.pixel_size_um * 1e-3).powi(2);
    let count = (config.dendrite_density_per_mm2 * area_mm2).round() as usize;
    let length = config.dendrite_length_um / config.pixel_size_um;
    let sigma = (0.5 * config.dendrite_width_um / config.pixel_size_um).max(0.3);
    const STEP: f64 = 0.5;
    (0..count)
        .map(|i| {
            let mut rng = Rng::new(config.seed, STREAM_DENDRITE + i as u64);
            let start = [rng.range(0.0, ch as f64), rng.range(0.0, cw as f64)];
            let heading = rng.range(0.0, std::f64::consts::TAU);
            let inside =
                |p: [f64; 2]| p[0] >= 0.0 && p[1] >= 0.0 && p[0] < ch as f64 && p[1] < cw as f64;
            let mut arms: Vec<Vec<[f64; 2]>> = Vec::new();
            for dir in [heading, heading + std::f64::consts::PI] {
                let (mut p, mut theta) = (start, dir);
                let mut arm = Vec::new();
                for _ in 0..(0.5 * length / STEP) as usize {
                    theta += 0.04 * rng.normal();
                    p = [p[0] + STEP * theta.sin(), p[1] + STEP * theta.cos()];
                    if !inside(p) {
                        break;
                    }
                    arm.push(p);
                }
                arms.push(arm);
            }
            let mut path: Vec<[f64; 2]> = arms[1].iter().rev().copied().collect();
            path.push(start);
            path.extend(arms[0].iter().copied());
            let footprint = tube_footprint(&path, sigma, canvas);
            let (mut cy, mut cx, mut total) = (0.0, 0.0, 0.0);
            for (&p, &wt) in footprint.pixels.iter().zip(&footprint.weights) {
                let wt = f64::from(wt);
                cy += wt * (p as usize / cw) as f64;
                cx += wt * (p as usize % cw) as f64;
                total += wt;
            }
            let center = if total > 0.0 {
                [cy / total, cx / total]
            } else {
                start
            };
            let rate_hz = rng.lognormal(config.rate_hz_median, config.rate_log_sigma);
            let baseline = 0.6 * config.cell_photons * rng.lognormal(1.0, 0.3);
            CanvasCell {
                kind: CellKind::Dendrite,
                center,
                radius: sigma,
                footprint,
                active: true,
                rate_hz,
                baseline,
            }
        })
        .collect()
}

/// Footprint of a tube along `path`: `exp(-d^2 / (2 sigma^2))` of each pixel's distance `d` to the
/// nearest path point (points every half pixel), peak 1, weights below the floor dropped.
fn tube_footprint(path: &[[f64; 2]], sigma: f64, canvas: (usize, usize)) -> SparseFootprint {
    let (ch, cw) = canvas;
    let reach = (3.0 * sigma).ceil() as isize;
    let mut dense: std::collections::BTreeMap<u32, f32> = std::collections::BTreeMap::new();
    for p in path {
        let (py, px) = (p[0].round() as isize, p[1].round() as isize);
        for y in (py - reach).max(0)..(py + reach + 1).min(ch as isize) {
            for x in (px - reach).max(0)..(px + reach + 1).min(cw as isize) {
                let d2 = (y as f64 - p[0]).powi(2) + (x as f64 - p[1]).powi(2);
                let wt = (-d2 / (2.0 * sigma * sigma)).exp() as f32;
                let e = dense
                    .entry((y as usize * cw + x as usize) as u32)
                    .or_insert(0.0);
                *e = e.max(wt);
            }
        }
    }
    let peak = dense.values().copied().fold(0.0f32, f32::max);
    let mut fp = SparseFootprint::default();
    if peak > 0.0 {
        for (p, wt) in dense {
            if wt / peak >= FOOTPRINT_FLOOR {
                fp.pixels.push(p);
                fp.weights.push(wt / peak);
            }
        }
    }
    fp
}

/// `n` stationary AR(1) processes of unit variance with coefficient `phi`, shape (n, frames).
fn ar1_processes(n: usize, frames: usize, phi: f64, seed: u64, stream: u64) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((n, frames));
    let innovation = (1.0 - phi * phi).max(0.0).sqrt();
    for k in 0..n {
        let mut rng = Rng::new(seed, stream + k as u64);
        let mut v = rng.normal();
        for t in 0..frames {
            out[[k, t]] = v as f32;
            v = phi * v + innovation * rng.normal();
        }
    }
    out
}

/// Spikes, calcium and fluorescence of every cell: (F, dF/F, spikes), each (cells, frames).
fn simulate_activity(
    config: &SimConfig,
    cells: &[CanvasCell],
) -> (Array2<f32>, Array2<f32>, Array2<u8>) {
    let frames = config.frames;
    let dt = 1.0 / config.frame_rate_hz;
    // Slow shared modulation: log-normal rate multipliers driven by AR(1) processes (tau = 2 s).
    let shared = ar1_processes(
        SHARED_GROUPS,
        frames,
        (-dt / 2.0).exp(),
        config.seed,
        STREAM_SHARED,
    );
    let ind = &config.indicator;
    let (tr, td) = (ind.rise_s, ind.decay_s);
    let t_peak = (td / tr).ln() * td * tr / (td - tr);
    let peak = (-t_peak / td).exp() - (-t_peak / tr).exp();
    let (gd, gr) = ((-dt / td).exp(), (-dt / tr).exp());
    // Spikes fall, on average, in the middle of their frame: half a frame of kinetics at the
    // frame they occur in.
    let (hd, hr) = ((-0.5 * dt / td).exp(), (-0.5 * dt / tr).exp());

    let rows: Vec<(Vec<f32>, Vec<f32>, Vec<u8>)> = cells
        .par_iter()
        .enumerate()
        .map(|(i, cell)| {
            let mut rng = Rng::new(config.seed, STREAM_CELL + (1 << 32) + i as u64);
            let group = i % SHARED_GROUPS;
            let amplitude = ind.dff_per_spike * rng.lognormal(1.0, 0.25);
            let (mut d, mut r) = (0.0f64, 0.0f64);
            let mut f = Vec::with_capacity(frames);
            let mut dff = Vec::with_capacity(frames);
            let mut spikes = Vec::with_capacity(frames);
            for t in 0..frames {
                let mut n = 0.0;
                if cell.active {
                    let modulation = (f64::from(shared[[group, t]]) - 0.5).exp();
                    let rate = cell.rate_hz
                        * ((1.0 - config.shared_modulation)
                            + config.shared_modulation * modulation);
                    let events = rng.poisson(rate * dt);
                    n = events;
                    for _ in 0..events as usize {
                        if rng.uniform() < config.burst_probability {
                            n += rng.poisson(config.burst_extra_spikes);
                        }
                    }
                }
                d = gd * d + hd * n;
                r = gr * r + hr * n;
                let c = amplitude * (d - r) / peak;
                let x = c / (1.0 + c / ind.saturation_dff);
                dff.push(x as f32);
                f.push((cell.baseline * (1.0 + x)) as f32);
                spikes.push(n.min(255.0) as u8);
            }
            (f, dff, spikes)
        })
        .collect();
    let n = cells.len();
    let mut fl = Array2::<f32>::zeros((n, frames));
    let mut dff = Array2::<f32>::zeros((n, frames));
    let mut sp = Array2::<u8>::zeros((n, frames));
    for (i, (f, d, s)) in rows.into_iter().enumerate() {
        fl.row_mut(i).assign(&ndarray::ArrayView1::from(&f));
        dff.row_mut(i).assign(&ndarray::ArrayView1::from(&d));
        sp.row_mut(i).assign(&ndarray::ArrayView1::from(&s));
    }
    (fl, dff, sp)
}

/// Smooth random field in [0, 1] on the canvas: bilinear interpolation of uniform values on a
/// coarse grid with the given spacing (px).
fn smooth_field(canvas: (usize, usize), spacing: f64, rng: &mut Rng) -> Vec<f32> {
    let (ch, cw) = canvas;
    let gy = (ch as f64 / spacing).ceil() as usize + 2;
    let gx = (cw as f64 / spacing).ceil() as usize + 2;
    let grid: Vec<f64> = (0..gy * gx).map(|_| rng.uniform()).collect();
    let mut out = Vec::with_capacity(ch * cw);
    for y in 0..ch {
        let fy = y as f64 / spacing;
        let (iy, ty) = (fy.floor() as usize, fy - fy.floor());
        for x in 0..cw {
            let fx = x as f64 / spacing;
            let (ix, tx) = (fx.floor() as usize, fx - fx.floor());
            // Smoothstep weights make the field C1-continuous at grid lines.
            let (sy, sx) = (ty * ty * (3.0 - 2.0 * ty), tx * tx * (3.0 - 2.0 * tx));
            let g = |a: usize, b: usize| grid[a * gx + b];
            let top = g(iy, ix) * (1.0 - sx) + g(iy, ix + 1) * sx;
            let bottom = g(iy + 1, ix) * (1.0 - sx) + g(iy + 1, ix + 1) * sx;
            out.push((top * (1.0 - sy) + bottom * sy) as f32);
        }
    }
    out
}

/// Static light (background + resting neuropil, darkened along blood vessels) and the neuropil
/// fluctuation maps, scaled so that the neuropil term is `np(p) * fluct * sum_k m_k(p) h_k / sqrt(K)`.
fn neuropil_fields(config: &SimConfig, canvas: (usize, usize)) -> (Vec<f32>, Array2<f32>) {
    let (ch, cw) = canvas;
    let mut rng = Rng::new(config.seed, STREAM_NEUROPIL);
    let scale_px = 40.0 / config.pixel_size_um;
    let texture = smooth_field(canvas, scale_px.max(4.0), &mut rng);
    // Vignetting of the objective: brightness falls to ~70% at the corners.
    let (my, mx) = (ch as f64 / 2.0, cw as f64 / 2.0);
    let rmax2 = my * my + mx * mx;
    // A few blood vessels: straight bands of width 6-12 um that block most of the light.
    let vessels: Vec<(f64, f64, f64, f64)> = (0..2)
        .map(|_| {
            let (py, px) = (rng.range(0.0, ch as f64), rng.range(0.0, cw as f64));
            let angle = rng.range(0.0, std::f64::consts::PI);
            let half_width = rng.range(3.0, 6.0) / config.pixel_size_um;
            (py, px, angle, half_width)
        })
        .collect();
    let mut vessel_mask = vec![1.0f32; ch * cw];
    for (y, row) in vessel_mask.chunks_mut(cw).enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            for &(py, px, angle, hw) in &vessels {
                let d = ((y as f64 - py) * angle.cos() - (x as f64 - px) * angle.sin()).abs();
                let shadow = 0.75 * (-(d / hw).powi(4)).exp();
                *v *= (1.0 - shadow) as f32;
            }
        }
    }
    let mut static_light = Vec::with_capacity(ch * cw);
    let mut neuropil_rest = Vec::with_capacity(ch * cw);
    for y in 0..ch {
        for x in 0..cw {
            let p = y * cw + x;
            let r2 = (y as f64 - my).powi(2) + (x as f64 - mx).powi(2);
            let vignette = 1.0 - 0.3 * r2 / rmax2;
            let np = config.neuropil_photons * vignette * (0.6 + 0.8 * f64::from(texture[p]));
            let np = np as f32 * vessel_mask[p];
            neuropil_rest.push(np);
            static_light.push((config.background_photons * vignette) as f32 + np);
        }
    }
    let k = config.neuropil_rank;
    let mut maps = Array2::<f32>::zeros((k, ch * cw));
    let norm = config.neuropil_fluctuation / (k.max(1) as f64).sqrt();
    for i in 0..k {
        let field = smooth_field(canvas, (scale_px * 2.0).max(8.0), &mut rng);
        for (p, v) in maps.row_mut(i).iter_mut().enumerate() {
            // Centre the field so fluctuations are signed, then scale by the local neuropil.
            *v = (2.0 * f64::from(field[p]) - 1.0) as f32 * neuropil_rest[p] * norm as f32;
        }
    }
    (static_light, maps)
}

/// Rigid motion (frames, 2): AR(1) drift of the given rms plus decaying jumps, clamped so the
/// field of view never leaves the simulated canvas.
fn simulate_motion(config: &SimConfig, margin: usize) -> Array2<f32> {
    let frames = config.frames;
    let mut out = Array2::<f32>::zeros((frames, 2));
    if config.motion_rms_px == 0.0 && config.motion_jump_probability == 0.0 {
        return out;
    }
    let dt = 1.0 / config.frame_rate_hz;
    let drift = ar1_processes(
        2,
        frames,
        (-dt / config.motion_timescale_s).exp(),
        config.seed,
        STREAM_MOTION,
    );
    let mut rng = Rng::new(config.seed, STREAM_MOTION + 100);
    let jump_decay = (-dt / 5.0).exp();
    let mut jump = [0.0f64; 2];
    let limit = (margin as f64 - 2.0 * config.soma_radius_px() - 1.0).max(0.0);
    let mut raw = Array2::<f64>::zeros((frames, 2));
    for t in 0..frames {
        if config.motion_jump_probability > 0.0 && rng.uniform() < config.motion_jump_probability {
            jump[0] += rng.range(-config.motion_jump_px, config.motion_jump_px);
            jump[1] += rng.range(-config.motion_jump_px, config.motion_jump_px);
        }
        for a in 0..2 {
            raw[[t, a]] = config.motion_rms_px * f64::from(drift[[a, t]]) + jump[a];
            jump[a] *= jump_decay;
        }
    }
    // Centre each axis on its median: the reference frame, where the ground truth lives, is where
    // the field sits most of the time, which is the frame `tessera register` returns.
    for a in 0..2 {
        let median = crate::stats::median(&mut raw.column(a).to_vec()).unwrap_or(0.0);
        for t in 0..frames {
            out[[t, a]] = (raw[[t, a]] - median).clamp(-limit, limit) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests;
