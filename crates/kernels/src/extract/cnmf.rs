//! CNMF demixing (Pnevmatikakis et al. 2016) with HALS block-coordinate updates (Cichocki & Phan
//! 2009; CaImAn's `HALS4activity` / `HALS4shapes`):
//!
//! ```text
//! Y ~ A C + B F,   A, C, B, F >= 0,   a_k supported on a disk of `search_radius_px` around its seed
//! c_k <- max(0, c_k + ([A^T (Y - B F)]_k - [A^T A]_k C) / [A^T A]_kk)
//! a_k <- max(0, a_k + ([(Y - B F) C^T]_k - A [C C^T]_k) / [C C^T]_kk)      (on the support)
//! f_j <- max(0, f_j + (b_j^T Y - b_j^T A C - b_j^T B F) / b_j^T b_j)
//! b_j <- max(0, b_j + (Y f_j^T - A C f_j^T - B F f_j^T) / f_j f_j^T)
//! ```
//!
//! Footprints are rescaled to a peak of 1 after each pass (traces carry the amplitude). Components
//! whose footprints overlap and whose traces correlate above `merge_threshold` are merged (union-find,
//! so chains merge into one), as CaImAn does with `merge_thr = 0.8`.

// The HALS updates index several arrays by the same component or pixel, as the formulas do.
#![allow(clippy::needless_range_loop)]

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Component, PixelMovie};
use crate::metrics::pearson;
use crate::vector::dot;

/// Demixing parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnmfParams {
    /// Outer HALS passes (temporal, spatial, background).
    pub iterations: usize,
    /// Rank of the background (1-2 for two-photon).
    pub background_rank: usize,
    /// Footprints may grow up to this distance (px) from their seed.
    pub search_radius_px: f64,
    /// Merge overlapping components whose traces correlate above this.
    pub merge_threshold: f64,
}

impl Default for CnmfParams {
    fn default() -> Self {
        CnmfParams {
            iterations: 4,
            background_rank: 2,
            search_radius_px: 10.0,
            merge_threshold: 0.8,
        }
    }
}

/// The low-rank background `B F`.
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    /// (pixels, rank)
    pub b: Array2<f32>,
    /// (rank, frames)
    pub f: Array2<f32>,
}

/// Dense footprint values over a fixed mask.
pub(super) struct Shapes {
    pub(super) masks: Vec<Vec<u32>>,
    pub(super) values: Vec<Vec<f32>>,
    /// pixel -> [(component, index in its mask)]
    pub(super) by_pixel: Vec<Vec<(u32, u32)>>,
}

impl Shapes {
    pub(super) fn new(comps: &[Component], height: usize, width: usize, radius: f64) -> Shapes {
        let mut masks = Vec::with_capacity(comps.len());
        let mut values = Vec::with_capacity(comps.len());
        for c in comps {
            let [sy, sx] = c.seed;
            let ri = radius.ceil() as isize;
            let mut mask: Vec<u32> = Vec::new();
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    let (y, x) = (sy as isize + dy, sx as isize + dx);
                    if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
                        continue;
                    }
                    if ((dy * dy + dx * dx) as f64) <= radius * radius {
                        mask.push((y as usize * width + x as usize) as u32);
                    }
                }
            }
            mask.extend_from_slice(&c.pixels);
            mask.sort_unstable();
            mask.dedup();
            let mut v = vec![0.0f32; mask.len()];
            for (&p, &w) in c.pixels.iter().zip(&c.weights) {
                if let Ok(i) = mask.binary_search(&p) {
                    v[i] = w;
                }
            }
            masks.push(mask);
            values.push(v);
        }
        let mut s = Shapes {
            masks,
            values,
            by_pixel: vec![Vec::new(); height * width],
        };
        s.index();
        s
    }

    fn index(&mut self) {
        self.by_pixel.iter_mut().for_each(Vec::clear);
        for (k, m) in self.masks.iter().enumerate() {
            for (i, &p) in m.iter().enumerate() {
                self.by_pixel[p as usize].push((k as u32, i as u32));
            }
        }
    }

    /// Pairs of components whose masks share a pixel (including (k, k)), sorted.
    fn overlapping(&self) -> Vec<Vec<usize>> {
        let mut nb: Vec<Vec<usize>> = vec![Vec::new(); self.masks.len()];
        for list in &self.by_pixel {
            for &(j, _) in list {
                for &(k, _) in list {
                    nb[j as usize].push(k as usize);
                }
            }
        }
        nb.iter_mut().for_each(|v| {
            v.sort_unstable();
            v.dedup();
        });
        nb
    }
}

/// Runs CNMF from detected components on the raw tile movie. Returns the refined components (traces
/// in the movie's units at the footprint peak) and the background.
pub fn demix(
    movie: &PixelMovie,
    comps: Vec<Component>,
    params: &CnmfParams,
) -> (Vec<Component>, Background) {
    let t = movie.frames();
    let y = &movie.data;
    let mut shapes = Shapes::new(&comps, movie.height, movie.width, params.search_radius_px);
    let mut c = initial_traces(&comps, t);
    let seeds: Vec<[usize; 2]> = comps.iter().map(|c| c.seed).collect();
    let mut bg = init_background(movie, &shapes, &c, params.background_rank.max(1));
    // B^T Y for the current B; each background update leaves it for the next.
    let mut bty = weighted_row_sums(y.view(), bg.b.view());
    let passes = params.iterations.max(1);
    // Merge once, halfway (after the first pass when there is only one).
    let merge_after = (passes / 2).max(1) - 1;
    for pass in 0..passes {
        update_temporal(y, &shapes, &mut c, &bg);
        update_spatial(y, &mut shapes, &c, &bg);
        normalise(&mut shapes, &mut c);
        update_background(y, &shapes, &c, &mut bg, &mut bty);
        if pass == merge_after {
            let (s, cc) = merge(
                shapes,
                c,
                params.merge_threshold,
                movie.height * movie.width,
            );
            shapes = s;
            c = cc;
            if pass + 1 == passes {
                // No pass follows: refit the merged traces once.
                update_temporal(y, &shapes, &mut c, &bg);
            }
        }
    }
    let mut out = Vec::new();
    for (k, (mask, vals)) in shapes.masks.iter().zip(&shapes.values).enumerate() {
        let mut comp = Component {
            pixels: Vec::new(),
            weights: Vec::new(),
            trace: c.row(k).to_vec(),
            seed: seeds.get(k).copied().unwrap_or([0, 0]),
        };
        for (&p, &v) in mask.iter().zip(vals) {
            if v > 0.0 {
                comp.pixels.push(p);
                comp.weights.push(v);
            }
        }
        if !comp.pixels.is_empty() && comp.trace.iter().any(|&v| v > 0.0) {
            comp.seed = {
                let [cy, cx] = comp.centroid(movie.width);
                [cy.round() as usize, cx.round() as usize]
            };
            out.push(comp);
        }
    }
    (out, bg)
}

/// Starting traces `C` (components x `t` frames): each component's trace minus its minimum; a
/// trace of another length starts at zero.
pub(super) fn initial_traces(comps: &[Component], t: usize) -> Array2<f32> {
    let mut c: Array2<f32> = Array2::zeros((comps.len(), t));
    for (k, comp) in comps.iter().enumerate() {
        if comp.trace.len() == t {
            let min = comp.trace.iter().copied().fold(f32::INFINITY, f32::min);
            for (dst, &v) in c.row_mut(k).iter_mut().zip(&comp.trace) {
                *dst = v - min;
            }
        }
    }
    c
}

fn init_background(
    movie: &PixelMovie,
    shapes: &Shapes,
    c: &Array2<f32>,
    rank: usize,
) -> Background {
    let (p_count, t) = (movie.pixels(), movie.frames());
    // Residual after the initial components, averaged over time (b_0) and over pixels (f_1).
    let mut pixel_sums = vec![0.0f64; p_count];
    let mut frame_sums = vec![0.0f64; t];
    add_residual_sums(
        movie.data.view(),
        shapes,
        c.view(),
        &mut pixel_sums,
        &mut frame_sums,
    );
    initial_background(&pixel_sums, &frame_sums, rank)
}

/// The initial background from the residual `R = Y - A C` of the initial components, summed over
/// frames (`pixel_sums`) and over pixels (`frame_sums`): `b_0 = max(0, mean_t R)`, `f_0 = 1`; with
/// rank 2, `f_1 = mean_p R` shifted to a minimum of 0 and `b_1 = b_0 / 20`.
pub(super) fn initial_background(
    pixel_sums: &[f64],
    frame_sums: &[f64],
    rank: usize,
) -> Background {
    let (p_count, t) = (pixel_sums.len(), frame_sums.len());
    let mut b = Array2::<f32>::zeros((p_count, rank));
    let mut f = Array2::<f32>::zeros((rank, t));
    for (p, &s) in pixel_sums.iter().enumerate() {
        b[[p, 0]] = (s / t.max(1) as f64).max(0.0) as f32;
    }
    f.row_mut(0).fill(1.0);
    if rank > 1 {
        let lo = frame_sums.iter().copied().fold(f64::INFINITY, f64::min);
        for (ti, &m) in frame_sums.iter().enumerate() {
            f[[1, ti]] = ((m - lo) / p_count.max(1) as f64) as f32;
        }
        for p in 0..p_count {
            b[[p, 1]] = 0.05 * b[[p, 0]];
        }
    }
    Background { b, f }
}

/// Adds the residual `R = Y - A C` of the frames of `y` (pixels x frames; `c` the traces over the
/// same frames) summed over those frames to `pixel_sums[p]`, and summed over pixels to
/// `frame_sums[t]`, in f64. Pixels in parallel blocks whose per-frame sums are added in a fixed
/// order, so the result does not depend on the number of threads; each pixel's sum runs in eight
/// interleaved partial sums (no chain of dependent additions as long as the movie).
pub(super) fn add_residual_sums(
    y: ArrayView2<f32>,
    shapes: &Shapes,
    c: ArrayView2<f32>,
    pixel_sums: &mut [f64],
    frame_sums: &mut [f64],
) {
    const BLOCK: usize = 1024;
    let parts: Vec<Vec<f64>> = pixel_sums
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(bi, sums)| {
            crate::vector::avx2(
                #[inline(always)]
                || residual_sums_block(y, shapes, c, bi * BLOCK, sums),
            )
        })
        .collect();
    for part in parts {
        for (f, v) in frame_sums.iter_mut().zip(part) {
            *f += v;
        }
    }
}

/// [`add_residual_sums`] over the pixels `first..first + sums.len()`: their sums over frames go
/// into `sums`, and their sums over pixels are returned per frame.
#[inline(always)]
fn residual_sums_block(
    y: ArrayView2<f32>,
    shapes: &Shapes,
    c: ArrayView2<f32>,
    first: usize,
    sums: &mut [f64],
) -> Vec<f64> {
    let n = y.ncols();
    let mut fm = vec![0.0f64; n];
    let mut res = vec![0.0f32; n];
    for (i, sum) in sums.iter_mut().enumerate() {
        let p = first + i;
        res.iter_mut().zip(y.row(p)).for_each(|(r, &v)| *r = v);
        for &(k, j) in &shapes.by_pixel[p] {
            let a = shapes.values[k as usize][j as usize];
            if a != 0.0 {
                for (r, &cv) in res.iter_mut().zip(c.row(k as usize)) {
                    *r -= a * cv;
                }
            }
        }
        let mut lanes = [0.0f64; 8];
        let chunks = res.chunks_exact(8);
        let tail: f64 = chunks.remainder().iter().map(|&r| f64::from(r)).sum();
        for chunk in chunks {
            for (l, &r) in lanes.iter_mut().zip(chunk) {
                *l += f64::from(r);
            }
        }
        *sum += lanes.iter().sum::<f64>() + tail;
        for (f, &r) in fm.iter_mut().zip(&res) {
            *f += f64::from(r);
        }
    }
    fm
}

fn update_temporal(y: &Array2<f32>, shapes: &Shapes, c: &mut Array2<f32>, bg: &Background) {
    let gram = temporal_gram(shapes);
    temporal_sweeps(y.view(), shapes, &gram, c.view_mut(), &bg.b, bg.f.view());
}

/// `V = A^T A` over overlapping pairs: for each component k, `(j, a_k . a_j)` for every j whose
/// mask meets k's (k included). Depends only on the footprints, so a streamed refit computes it
/// once for all its time chunks.
pub(super) fn temporal_gram(shapes: &Shapes) -> Vec<Vec<(usize, f32)>> {
    let nb = shapes.overlapping();
    (0..shapes.masks.len())
        .map(|k| {
            nb[k]
                .iter()
                .map(|&j| {
                    let mut s = 0.0f32;
                    for (&p, &a) in shapes.masks[k].iter().zip(&shapes.values[k]) {
                        if a == 0.0 {
                            continue;
                        }
                        if let Some(&(_, i)) = shapes.by_pixel[p as usize]
                            .iter()
                            .find(|(kk, _)| *kk as usize == j)
                        {
                            s += a * shapes.values[j][i as usize];
                        }
                    }
                    (j, s)
                })
                .collect()
        })
        .collect()
}

/// Three HALS sweeps of the traces `c` (components x frames of `y`) with footprints, `gram`
/// ([`temporal_gram`]) and background `b` fixed; `f` is the background's traces over the same
/// frames. Each frame's update depends only on that frame, so time chunks update independently.
pub(super) fn temporal_sweeps(
    y: ArrayView2<f32>,
    shapes: &Shapes,
    gram: &[Vec<(usize, f32)>],
    mut c: ArrayViewMut2<f32>,
    b: &Array2<f32>,
    f: ArrayView2<f32>,
) {
    let k_count = shapes.masks.len();
    let t = y.ncols();
    // U = A^T Y - (A^T B) F
    let u: Vec<Vec<f32>> = (0..k_count)
        .into_par_iter()
        .map(|k| {
            let mut row = vec![0.0f32; t];
            let mut atb = vec![0.0f32; b.ncols()];
            crate::vector::avx2(
                #[inline(always)]
                || {
                    for (&p, &a) in shapes.masks[k].iter().zip(&shapes.values[k]) {
                        if a == 0.0 {
                            continue;
                        }
                        add_scaled(&mut row, a, y.row(p as usize));
                        for (j, o) in atb.iter_mut().enumerate() {
                            *o += a * b[[p as usize, j]];
                        }
                    }
                    for (j, &s) in atb.iter().enumerate() {
                        for (o, &fv) in row.iter_mut().zip(f.row(j)) {
                            *o -= s * fv;
                        }
                    }
                },
            );
            row
        })
        .collect();
    for _ in 0..3 {
        for k in 0..k_count {
            let vkk = gram[k].iter().find(|(j, _)| *j == k).map_or(0.0, |x| x.1);
            if vkk <= 0.0 {
                c.row_mut(k).fill(0.0);
                continue;
            }
            let mut grad = u[k].clone();
            for &(j, vkj) in &gram[k] {
                if vkj == 0.0 {
                    continue;
                }
                for (g, &cv) in grad.iter_mut().zip(c.row(j)) {
                    *g -= vkj * cv;
                }
            }
            for (cv, g) in c.row_mut(k).iter_mut().zip(grad) {
                *cv = (*cv + g / vkk).max(0.0);
            }
        }
    }
}

fn update_spatial(y: &Array2<f32>, shapes: &mut Shapes, c: &Array2<f32>, bg: &Background) {
    let k_count = shapes.masks.len();
    let nb = shapes.overlapping();
    // Q = C C^T over overlapping pairs; F C^T for the background term.
    let q: Vec<Vec<(usize, f32)>> = (0..k_count)
        .into_par_iter()
        .map(|k| {
            nb[k]
                .iter()
                .map(|&j| (j, c.row(k).dot(&c.row(j))))
                .collect()
        })
        .collect();
    let fct: Array2<f32> = bg.f.dot(&c.t()); // (rank, K)
    // W = Y C^T - B (F C^T) on each mask.
    let w: Vec<Vec<f32>> = (0..k_count)
        .into_par_iter()
        .map(|k| {
            let ck = c.row(k);
            shapes.masks[k]
                .iter()
                .map(|&p| {
                    let mut s = y.row(p as usize).dot(&ck);
                    for j in 0..bg.b.ncols() {
                        s -= bg.b[[p as usize, j]] * fct[[j, k]];
                    }
                    s
                })
                .collect()
        })
        .collect();
    for k in 0..k_count {
        let qkk = q[k].iter().find(|(j, _)| *j == k).map_or(0.0, |x| x.1);
        if qkk <= 0.0 {
            shapes.values[k].iter_mut().for_each(|v| *v = 0.0);
            continue;
        }
        for i in 0..shapes.masks[k].len() {
            let p = shapes.masks[k][i] as usize;
            let mut acc = w[k][i];
            for &(j, jj) in &shapes.by_pixel[p] {
                let aj = shapes.values[j as usize][jj as usize];
                if aj == 0.0 {
                    continue;
                }
                if let Some(&(_, qjk)) = q[k].iter().find(|(jx, _)| *jx == j as usize) {
                    acc -= aj * qjk;
                }
            }
            let v = &mut shapes.values[k][i];
            *v = (*v + acc / qkk).max(0.0);
        }
    }
}

/// Scales each footprint to a peak of 1, moving the scale into the trace.
fn normalise(shapes: &mut Shapes, c: &mut Array2<f32>) {
    for (k, vals) in shapes.values.iter_mut().enumerate() {
        let m = vals.iter().copied().fold(0.0f32, f32::max);
        if m > 0.0 {
            vals.iter_mut().for_each(|v| *v /= m);
            c.row_mut(k).mapv_inplace(|v| v * m);
        }
    }
}

/// The background's update in demixing: its traces `F` from `bty = B^T Y` (for the current `B`),
/// then its footprints `B`, in one pass over the movie that also returns `B^T Y` for the updated
/// `B`, which the next call takes ([`background_footprints_pass`]). The same updates as
/// [`update_background_traces`] followed by [`BackgroundStats`], bit for bit, with one pass over
/// the movie fewer.
fn update_background(
    y: &Array2<f32>,
    shapes: &Shapes,
    c: &Array2<f32>,
    bg: &mut Background,
    bty: &mut Array2<f32>,
) {
    background_traces_from(bty.view(), shapes, c.view(), &bg.b, bg.f.view_mut());
    *bty = background_footprints_pass(y.view(), shapes, c.view(), bg.f.view(), &mut bg.b);
}

/// The HALS update of the background traces `f` (rank x frames of `y`) with `b` fixed:
/// `f_j <- max(0, f_j + (b_j^T Y - (b_j^T A) C - (b_j^T B) F) / b_j^T b_j)`, j in order. Frame by
/// frame, so time chunks update independently.
pub(super) fn update_background_traces(
    y: ArrayView2<f32>,
    shapes: &Shapes,
    c: ArrayView2<f32>,
    b: &Array2<f32>,
    f: ArrayViewMut2<f32>,
) {
    // b_j^T Y for every j in one pass over Y (b is fixed here; only f changes).
    let bty = weighted_row_sums(y, b.view());
    background_traces_from(bty.view(), shapes, c, b, f);
}

/// [`update_background_traces`] given `bty = B^T Y` (rank x frames).
pub(super) fn background_traces_from(
    bty: ArrayView2<f32>,
    shapes: &Shapes,
    c: ArrayView2<f32>,
    b: &Array2<f32>,
    mut f: ArrayViewMut2<f32>,
) {
    let rank = b.ncols();
    for j in 0..rank {
        let bj = b.column(j).to_owned();
        let bb = bj.dot(&bj);
        if bb <= 0.0 {
            continue;
        }
        let mut e = bty.row(j).to_owned();
        for k in 0..shapes.masks.len() {
            let s: f32 = shapes.masks[k]
                .iter()
                .zip(&shapes.values[k])
                .map(|(&p, &a)| a * bj[p as usize])
                .sum();
            if s != 0.0 {
                e.scaled_add(-s, &c.row(k));
            }
        }
        let btb = b.t().dot(&bj);
        for i in 0..rank {
            e.scaled_add(-btb[i], &f.row(i));
        }
        let mut fj = f.row_mut(j);
        for (fv, ev) in fj.iter_mut().zip(e.iter()) {
            *fv = (*fv + ev / bb).max(0.0);
        }
    }
}

/// The update of the background footprints `b` ([`BackgroundStats::update_footprints`]) for the
/// whole movie `y` at once, pixel by pixel, and `B^T Y` for the updated `b` in the same pass: each
/// pixel's row of `b` depends only on that pixel's `Y F^T` and on the global `C F^T` and `F F^T`,
/// so it is final as soon as the pixel's row of `y` has been read, and is added into `B^T Y` while
/// the row is still in cache. Pixels in the blocks, order and sums of [`weighted_row_sums`], so the
/// returned `B^T Y` equals `weighted_row_sums(y, b)` on the updated `b` bit for bit, and `b`
/// equals the two-pass update's.
pub(super) fn background_footprints_pass(
    y: ArrayView2<f32>,
    shapes: &Shapes,
    c: ArrayView2<f32>,
    f: ArrayView2<f32>,
    b: &mut Array2<f32>,
) -> Array2<f32> {
    let (t, rank) = (y.ncols(), b.ncols());
    let ft = f.t();
    let cf = c.dot(&ft);
    let ff = f.dot(&ft);
    let f_rows: Vec<Vec<f32>> = f.rows().into_iter().map(|r| r.to_vec()).collect();
    let partial: Vec<Array2<f32>> = b
        .axis_chunks_iter_mut(Axis(0), WEIGHTED_SUM_BLOCK)
        .into_par_iter()
        .enumerate()
        .map(|(bi, mut rows)| {
            let mut acc = vec![0.0f32; rank * t];
            let mut yf = vec![0.0f32; rank];
            crate::vector::avx2(
                #[inline(always)]
                || {
                    for (i, mut bp) in rows.outer_iter_mut().enumerate() {
                        let p = bi * WEIGHTED_SUM_BLOCK + i;
                        let row = y.row(p);
                        // As `BackgroundStats::add` sums into zeros.
                        yf.fill(0.0);
                        add_row_products(row, &f_rows, yf.iter_mut());
                        update_pixel_footprint(
                            bp.view_mut(),
                            ArrayView1::from(&yf[..]),
                            p,
                            shapes,
                            &cf,
                            &ff,
                        );
                        for (j, acc_j) in acc.chunks_exact_mut(t.max(1)).enumerate() {
                            let wp = bp[j];
                            if wp != 0.0 {
                                add_scaled(acc_j, wp, row);
                            }
                        }
                    }
                },
            );
            Array2::from_shape_vec((rank, t), acc).expect("rank x frames")
        })
        .collect();
    partial
        .into_iter()
        .fold(Array2::<f32>::zeros((rank, t)), |acc, part| acc + part)
}

/// `acc += a * x`, the products and sums of ndarray's `scaled_add` (so, bit for bit, its result),
/// over a slice where `x` is contiguous so that it vectorises (inlined into [`crate::vector::avx2`]
/// callers, eight lanes).
#[inline(always)]
fn add_scaled(acc: &mut [f32], a: f32, x: ArrayView1<f32>) {
    match x.as_slice() {
        Some(x) => {
            for (o, &v) in acc.iter_mut().zip(x) {
                *o += a * v;
            }
        }
        None => {
            for (o, &v) in acc.iter_mut().zip(x.iter()) {
                *o += a * v;
            }
        }
    }
}

/// `out[j] += row . f_rows[j]` for each background component j (the row is copied first when it is
/// not contiguous).
#[inline(always)]
fn add_row_products<'a>(
    row: ArrayView1<f32>,
    f_rows: &[Vec<f32>],
    out: impl IntoIterator<Item = &'a mut f32>,
) {
    let owned;
    let r: &[f32] = match row.to_slice() {
        Some(r) => r,
        None => {
            owned = row.to_vec();
            &owned
        }
    };
    for (o, fr) in out.into_iter().zip(f_rows) {
        *o += dot(r, fr);
    }
}

/// What the update of the background footprints `b` needs from the movie, summed over time, so
/// that time chunks add up: `Y F^T` (pixels x rank), `C F^T` (components x rank), `F F^T`.
pub(super) struct BackgroundStats {
    yf: Array2<f32>,
    cf: Array2<f32>,
    ff: Array2<f32>,
}

impl BackgroundStats {
    pub(super) fn new(pixels: usize, components: usize, rank: usize) -> BackgroundStats {
        BackgroundStats {
            yf: Array2::zeros((pixels, rank)),
            cf: Array2::zeros((components, rank)),
            ff: Array2::zeros((rank, rank)),
        }
    }

    /// Adds the frames of one chunk: `y` (pixels x frames), `c` and `f` over the same frames.
    /// `Y F^T` is one dot product per pixel and background component, pixels in parallel (a
    /// general matrix product would first copy all of `y` into packed panels for a product of
    /// rank 1-2).
    pub(super) fn add(&mut self, y: ArrayView2<f32>, c: ArrayView2<f32>, f: ArrayView2<f32>) {
        let ft = f.t();
        let f_rows: Vec<Vec<f32>> = f.rows().into_iter().map(|r| r.to_vec()).collect();
        ndarray::Zip::from(self.yf.rows_mut())
            .and(y.rows())
            .par_for_each(|mut out, row| add_row_products(row, &f_rows, out.iter_mut()));
        self.cf += &c.dot(&ft);
        self.ff += &f.dot(&ft);
    }

    /// `b_j <- max(0, b_j + (Y f_j^T - A C f_j^T - B F f_j^T) / f_j f_j^T)`, j in order.
    pub(super) fn update_footprints(&self, shapes: &Shapes, b: &mut Array2<f32>) {
        for (p, bp) in b.outer_iter_mut().enumerate() {
            update_pixel_footprint(bp, self.yf.row(p), p, shapes, &self.cf, &self.ff);
        }
    }
}

/// The HALS update of pixel `p`'s row `bp` of the background footprints from that pixel's row `yf`
/// of `Y F^T` and the global `C F^T`, `F F^T`:
/// `b_j <- max(0, b_j + (yf_j - sum_k a_k (C F^T)_kj - sum_i b_i (F F^T)_ij) / (F F^T)_jj)`, j in
/// order (a background component with `(F F^T)_jj <= 0` is left as it is). Each pixel's row depends
/// on no other pixel's, so the update runs pixel by pixel.
fn update_pixel_footprint(
    mut bp: ArrayViewMut1<f32>,
    yf: ArrayView1<f32>,
    p: usize,
    shapes: &Shapes,
    cf: &Array2<f32>,
    ff: &Array2<f32>,
) {
    let rank = bp.len();
    for j in 0..rank {
        let fjj = ff[[j, j]];
        if fjj <= 0.0 {
            continue;
        }
        let mut e = yf[j];
        for &(k, idx) in &shapes.by_pixel[p] {
            e -= shapes.values[k as usize][idx as usize] * cf[[k as usize, j]];
        }
        let mut s = 0.0;
        for i in 0..rank {
            s += bp[i] * ff[[i, j]];
        }
        e -= s;
        bp[j] = (bp[j] + e / fjj).max(0.0);
    }
}

/// `sum_p w[p, j] * y[p, :]` for every column j of `w` (that is, `(Y^T W)^T`, columns x frames),
/// in one pass over the rows of `y`: parallel blocks of pixels, added in a fixed order so the
/// result does not depend on the number of threads. Row j equals the single-column sum for `w`'s
/// column j bit for bit (the same products, in the same order).
fn weighted_row_sums(y: ArrayView2<f32>, w: ArrayView2<f32>) -> Array2<f32> {
    const BLOCK: usize = WEIGHTED_SUM_BLOCK;
    let (t, k) = (y.ncols(), w.ncols());
    let partial: Vec<Array2<f32>> = (0..y.nrows().div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0.0f32; k * t];
            crate::vector::avx2(
                #[inline(always)]
                || {
                    for p in b * BLOCK..((b + 1) * BLOCK).min(y.nrows()) {
                        for (j, acc_j) in acc.chunks_exact_mut(t.max(1)).enumerate() {
                            let wp = w[[p, j]];
                            if wp != 0.0 {
                                add_scaled(acc_j, wp, y.row(p));
                            }
                        }
                    }
                },
            );
            Array2::from_shape_vec((k, t), acc).expect("columns x frames")
        })
        .collect();
    partial
        .into_iter()
        .fold(Array2::<f32>::zeros((k, t)), |acc, part| acc + part)
}

/// Pixels per parallel block of [`weighted_row_sums`] and [`background_footprints_pass`].
const WEIGHTED_SUM_BLOCK: usize = 512;

/// Root of `i` in a union-find forest, compressing the path on the way.
pub(super) fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut i = i;
    while parent[i] != r {
        let next = parent[i];
        parent[i] = r;
        i = next;
    }
    r
}

/// Merges overlapping, correlated components (union-find over pairs, lowest index as the root).
fn merge(shapes: Shapes, c: Array2<f32>, threshold: f64, pixels: usize) -> (Shapes, Array2<f32>) {
    let k_count = shapes.masks.len();
    let nb = shapes.overlapping();
    let mut parent: Vec<usize> = (0..k_count).collect();
    for k in 0..k_count {
        for &j in &nb[k] {
            if j <= k {
                continue;
            }
            // Footprints (not just masks) must overlap.
            let overlap = shapes.masks[k]
                .iter()
                .zip(&shapes.values[k])
                .any(|(&p, &a)| {
                    a > 0.0
                        && shapes.by_pixel[p as usize].iter().any(|&(kk, ii)| {
                            kk as usize == j && shapes.values[j][ii as usize] > 0.0
                        })
                });
            if overlap && pearson(c.row(k), c.row(j)) > threshold {
                let (rk, rj) = (find(&mut parent, k), find(&mut parent, j));
                if rk != rj {
                    parent[rk.max(rj)] = rk.min(rj);
                }
            }
        }
    }
    let roots: Vec<usize> = (0..k_count).map(|k| find(&mut parent, k)).collect();
    if roots.iter().enumerate().all(|(k, &r)| r == k) {
        return (shapes, c);
    }
    let t = c.ncols();
    let mut masks = Vec::new();
    let mut values = Vec::new();
    let mut traces: Vec<Vec<f32>> = Vec::new();
    for root in 0..k_count {
        if roots[root] != root {
            continue;
        }
        let members: Vec<usize> = (0..k_count).filter(|&k| roots[k] == root).collect();
        // Merged footprint: sum of the members' a_k scaled by their trace norms; trace: the mean of
        // the members' traces. Both are starting points that the following HALS passes refine.
        let mut acc: std::collections::BTreeMap<u32, f32> = Default::default();
        let mut trace = vec![0.0f32; t];
        for &k in &members {
            let norm = c.row(k).dot(&c.row(k)).sqrt();
            for (&p, &a) in shapes.masks[k].iter().zip(&shapes.values[k]) {
                *acc.entry(p).or_default() += a * norm;
            }
            for (o, &v) in trace.iter_mut().zip(c.row(k)) {
                *o += v;
            }
        }
        let n = members.len() as f32;
        trace.iter_mut().for_each(|v| *v /= n);
        masks.push(acc.keys().copied().collect::<Vec<u32>>());
        values.push(acc.values().copied().collect::<Vec<f32>>());
        traces.push(trace);
    }
    let mut merged = Shapes {
        masks,
        values,
        by_pixel: vec![Vec::new(); pixels],
    };
    merged.index();
    let mut cm = Array2::<f32>::zeros((traces.len(), t));
    for (k, tr) in traces.into_iter().enumerate() {
        cm.row_mut(k).assign(&Array1::from(tr));
    }
    let mut shapes = merged;
    let mut cm = cm;
    normalise(&mut shapes, &mut cm);
    (shapes, cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of `n` pixels in rows of `cols` from pixel `start` of a field `w` pixels wide,
    /// each pixel `p` weighted `weight(p)`.
    fn rectangle(
        w: usize,
        start: usize,
        n: usize,
        cols: usize,
        seed: [usize; 2],
        weight: impl Fn(u32) -> f32,
    ) -> Component {
        let pixels: Vec<u32> = (0..n)
            .map(|i| (start + i / cols * w + i % cols) as u32)
            .collect();
        Component {
            weights: pixels.iter().map(|&p| weight(p)).collect(),
            pixels,
            trace: Vec::new(),
            seed,
        }
    }

    #[test]
    fn residual_sums_are_y_minus_ac_summed_both_ways_over_chunks() {
        // Two overlapping components on a 30 x 40 field (more pixels than one block), 21 frames in
        // chunks of 13 and 8 (not multiples of the eight partial sums).
        let (h, w, t) = (30, 40, 21);
        let weight = |p: u32| 0.2 + (p % 7) as f32 * 0.1;
        let comps = vec![
            rectangle(w, 0, 200, 12, [5, 5], weight),
            rectangle(w, 100, 150, 10, [8, 8], weight),
        ];
        let shapes = Shapes::new(&comps, h, w, 0.0);
        let c = Array2::from_shape_fn((2, t), |(k, i)| ((k * 5 + i * 3) % 7) as f32);
        let y = Array2::from_shape_fn((h * w, t), |(p, i)| ((p * 13 + i * 7) % 17) as f32 + 50.0);
        let (mut pixel_sums, mut frame_sums) = (vec![0.0f64; h * w], vec![0.0f64; t]);
        for frames in [0..13, 13..t] {
            add_residual_sums(
                y.slice(ndarray::s![.., frames.clone()]),
                &shapes,
                c.slice(ndarray::s![.., frames.clone()]),
                &mut pixel_sums,
                &mut frame_sums[frames],
            );
        }
        // The obvious sums over the dense residual.
        let mut r = y.mapv(f64::from);
        for (k, comp) in comps.iter().enumerate() {
            for (&p, &a) in comp.pixels.iter().zip(&comp.weights) {
                for i in 0..t {
                    r[[p as usize, i]] -= f64::from(a) * f64::from(c[[k, i]]);
                }
            }
        }
        for p in 0..h * w {
            let want: f64 = r.row(p).sum();
            assert!(
                (pixel_sums[p] - want).abs() < 1e-3,
                "pixel {p}: {} vs {want}",
                pixel_sums[p]
            );
        }
        for i in 0..t {
            let want: f64 = r.column(i).sum();
            assert!(
                (frame_sums[i] - want).abs() < 1e-2,
                "frame {i}: {} vs {want}",
                frame_sums[i]
            );
        }
    }

    #[test]
    fn weighted_row_sums_are_y_transpose_times_w() {
        // More rows than one block, some zero weights, two columns.
        let y = Array2::from_shape_fn((1300, 7), |(p, t)| ((p * 7 + t * 3) % 11) as f32 - 5.0);
        let w = Array2::from_shape_fn((1300, 2), |(p, j)| {
            if p % (5 + j) == 0 {
                0.0
            } else {
                ((p + 3 * j) % 13) as f32 * 0.1
            }
        });
        let fast = weighted_row_sums(y.view(), w.view());
        assert_eq!(fast.dim(), (2, 7));
        for j in 0..2 {
            for t in 0..7 {
                let slow: f64 = (0..1300)
                    .map(|p| f64::from(y[[p, t]]) * f64::from(w[[p, j]]))
                    .sum();
                assert!(
                    (f64::from(fast[[j, t]]) - slow).abs() < 1e-3 * slow.abs().max(1.0),
                    "{j} {t}"
                );
            }
        }
    }

    #[test]
    fn background_statistics_are_the_products_summed_over_chunks() {
        // 15 frames in chunks of 9 and 6 (not multiples of the dot product's 8 lanes), `y` taken
        // from every other column of a larger array, background rank 2.
        let full = Array2::from_shape_fn((40, 30), |(p, t)| ((p * 7 + t * 3) % 11) as f32 - 5.0);
        let y = full.slice(ndarray::s![.., ..;2]);
        let c = Array2::from_shape_fn((3, 15), |(k, t)| ((k + t) % 4) as f32);
        let f = Array2::from_shape_fn((2, 15), |(j, t)| 1.0 + ((j * 5 + t) % 3) as f32);
        let mut stats = BackgroundStats::new(40, 3, 2);
        stats.add(
            y.slice(ndarray::s![.., ..9]),
            c.slice(ndarray::s![.., ..9]),
            f.slice(ndarray::s![.., ..9]),
        );
        stats.add(
            y.slice(ndarray::s![.., 9..]),
            c.slice(ndarray::s![.., 9..]),
            f.slice(ndarray::s![.., 9..]),
        );
        let slow = |a: ArrayView2<f32>, i: usize, j: usize| -> f64 {
            (0..15)
                .map(|t| f64::from(a[[i, t]]) * f64::from(f[[j, t]]))
                .sum()
        };
        for j in 0..2 {
            for p in 0..40 {
                assert!((f64::from(stats.yf[[p, j]]) - slow(y, p, j)).abs() < 1e-3);
            }
            for k in 0..3 {
                assert!((f64::from(stats.cf[[k, j]]) - slow(c.view(), k, j)).abs() < 1e-3);
            }
            for i in 0..2 {
                assert!((f64::from(stats.ff[[i, j]]) - slow(f.view(), i, j)).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn the_fused_background_pass_equals_the_two_pass_update_bit_for_bit() {
        // 1300 pixels (three blocks, the last partial), 37 frames, two overlapping components with
        // zero and non-zero weights, background rank 2; the movie is a strided view.
        let (h, w, t) = (26, 50, 37);
        let full = Array2::from_shape_fn((h * w, 2 * t), |(p, i)| {
            ((p * 13 + i * 7) % 23) as f32 * 0.7 + 40.0
        });
        let y = full.slice(ndarray::s![.., ..;2]);
        let weight = |p: u32| (p % 5) as f32 * 0.2;
        let comps = vec![
            rectangle(w, 0, 300, 15, [3, 3], weight),
            rectangle(w, 160, 200, 10, [9, 9], weight),
        ];
        let shapes = Shapes::new(&comps, h, w, 2.0);
        let c = Array2::from_shape_fn((2, t), |(k, i)| ((k * 3 + i * 5) % 9) as f32 * 0.5);
        let f = Array2::from_shape_fn((2, t), |(j, i)| 1.0 + ((j * 7 + i) % 4) as f32 * 0.3);
        let b0 = Array2::from_shape_fn((h * w, 2), |(p, j)| ((p * 3 + j) % 7) as f32 * 0.4);
        // Two passes: the statistics, the footprints, then B^T Y for them.
        let mut two = b0.clone();
        let mut stats = BackgroundStats::new(h * w, 2, 2);
        stats.add(y, c.view(), f.view());
        stats.update_footprints(&shapes, &mut two);
        let bty_two = weighted_row_sums(y, two.view());
        // One pass.
        let mut one = b0.clone();
        let bty_one = background_footprints_pass(y, &shapes, c.view(), f.view(), &mut one);
        assert_eq!(one, two);
        assert_eq!(bty_one, bty_two);
        assert!(one.iter().any(|&v| v != 0.0) && one != b0);
    }
}
