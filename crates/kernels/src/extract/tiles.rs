//! Extraction in spatial tiles, and the merge that makes the tiled result match the untiled one
//! (ARCHITECTURE.md, "Merging across tiles").
//!
//! 1. Each tile runs detection and CNMF on its core plus a halo (at least twice the cell radius),
//!    so a cell near the core's edge is seen whole.
//! 2. Ownership: a tile keeps the components whose centroid lies in its core widened by
//!    `margin_px` (a little, so that a cell on the boundary, whose centroid two tiles estimate a
//!    fraction of a pixel apart, is kept by at least one of them).
//! 3. Duplicates (the boundary cells kept twice, or a fragment of a cell one tile cut at its
//!    halo's edge) and pieces of one structure cut by tile edges (dendrites) merge: components from
//!    supports (weight >= 0.2) overlap by half the smaller one, or from different tiles sharing a
//!    pixel while their traces correlate above `merge_threshold`, join through union-find; a
//!    merged footprint is the pixelwise maximum of its members'. Candidates are ordered by (tile, position)
//!    before the union and the result by footprint position, so the outcome does not depend on the
//!    order in which tiles finished.
//! 4. The caller ends with the global refit ([`super::refit`]), which re-estimates every trace and
//!    the background from all final footprints, streamed over time chunks of the whole field, so
//!    traces carry no seam.
//!
//! Only one tile's movie is in memory at a time: [`extract_tiled`] asks a reader for each tile's
//! halo box, so a recording many times the memory of the process can be processed.

use std::collections::BTreeMap;
use std::ops::Range;

use ndarray::{Array2, Array3, ArrayView2, s};

use super::cnmf::find;
use super::{CnmfParams, Component, DetectParams, demix, detect_pixel_major};
use crate::KernelError;
use crate::metrics::pearson;

/// One spatial tile: the core it answers for and the halo box it reads (rows, columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWindow {
    pub core_y: Range<usize>,
    pub core_x: Range<usize>,
    pub halo_y: Range<usize>,
    pub halo_x: Range<usize>,
}

/// Parameters of the merge across tiles.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeParams {
    /// How far (px) outside its core a tile still keeps a component's centroid.
    pub margin_px: f64,
    /// Components of different tiles that overlap and whose traces correlate above this merge.
    pub merge_threshold: f64,
}

/// The result of [`extract_tiled`].
#[derive(Debug, Clone)]
pub struct TiledExtraction {
    /// Merged components, with the traces their tiles estimated (not yet refit).
    pub components: Vec<Component>,
    /// Mean and detection images stitched from the tiles' cores.
    pub mean: Array2<f32>,
    pub correlation: Array2<f32>,
    pub pnr: Array2<f32>,
    /// Seeds detected over all tiles.
    pub seeds: usize,
    /// Components kept by ownership before the merge, and merges made.
    pub kept: usize,
    pub merged: usize,
}

/// A component found by tile `tile`, in whole-field pixel indices.
#[derive(Debug, Clone)]
pub struct TileComponent {
    pub tile: usize,
    pub component: Component,
}

/// Detection and CNMF on each tile (in order; each runs data-parallel inside), ownership and the
/// merge across tiles, on a `height x width` field of `frames` frames. `read(i, window)` returns
/// tile `i`'s halo box, (frames, halo rows, halo columns), so only one tile's movie is held at a
/// time. `seedable` (whole field) restricts seeds as in [`detect_within`]. The components keep the
/// traces their tiles estimated; the caller ends with the global [`super::refit`].
///
/// Errors when a window's halo leaves the field or does not contain its core, when a tile read
/// has another shape than its halo box, or when the reader fails.
#[allow(clippy::too_many_arguments)]
pub fn extract_tiled<E: From<KernelError>>(
    (frames, h, w): (usize, usize, usize),
    tiles: &[TileWindow],
    mut read: impl FnMut(usize, &TileWindow) -> Result<Array3<f32>, E>,
    detect: &DetectParams,
    seedable: Option<ArrayView2<bool>>,
    cnmf: &CnmfParams,
    merge: &MergeParams,
) -> Result<TiledExtraction, E> {
    if let Some(m) = seedable
        && m.dim() != (h, w)
    {
        return Err(KernelError::Shape(format!(
            "seed mask {:?} does not match the {h}x{w} field",
            m.dim()
        ))
        .into());
    }
    for (i, tile) in tiles.iter().enumerate() {
        let inside = |core: &Range<usize>, halo: &Range<usize>, n: usize| {
            !core.is_empty() && halo.start <= core.start && core.end <= halo.end && halo.end <= n
        };
        if !(inside(&tile.core_y, &tile.halo_y, h) && inside(&tile.core_x, &tile.halo_x, w)) {
            return Err(KernelError::Shape(format!(
                "tile {i}: core {:?} x {:?} must be non-empty and inside its halo {:?} x {:?}, inside the {h}x{w} field",
                tile.core_y, tile.core_x, tile.halo_y, tile.halo_x
            ))
            .into());
        }
    }
    let mut mean = Array2::<f32>::zeros((h, w));
    let mut correlation = Array2::<f32>::zeros((h, w));
    let mut pnr = Array2::<f32>::zeros((h, w));
    let mut candidates = Vec::new();
    let mut seeds = 0;
    for (index, tile) in tiles.iter().enumerate() {
        let (hy, hx) = (tile.halo_y.clone(), tile.halo_x.clone());
        let crop = read(index, tile)?;
        if crop.dim() != (frames, hy.len(), hx.len()) {
            return Err(KernelError::Shape(format!(
                "tile {index} read as {:?}, expected its halo box ({frames}, {}, {})",
                crop.dim(),
                hy.len(),
                hx.len()
            ))
            .into());
        }
        let mask = seedable.map(|m| m.slice_move(s![hy.clone(), hx.clone()]));
        let (found, images, pm) = detect_pixel_major(crop, detect, mask);
        seeds += found.len();
        let (oy, ox) = (tile.core_y.start - hy.start, tile.core_x.start - hx.start);
        let (cy, cx) = (oy..oy + tile.core_y.len(), ox..ox + tile.core_x.len());
        let core = s![cy.clone(), cx.clone()];
        let whole = s![tile.core_y.clone(), tile.core_x.clone()];
        correlation
            .slice_mut(whole)
            .assign(&images.correlation.slice(core));
        pnr.slice_mut(whole).assign(&images.pnr.slice(core));
        mean.slice_mut(whole).assign(&images.mean.slice(s![cy, cx]));
        let (comps, _) = demix(&pm, found, cnmf);
        let tw = hx.len();
        for mut c in comps {
            for p in &mut c.pixels {
                let (y, x) = (*p as usize / tw, *p as usize % tw);
                *p = ((hy.start + y) * w + hx.start + x) as u32;
            }
            c.seed = [c.seed[0] + hy.start, c.seed[1] + hx.start];
            let [cy, cx] = c.centroid(w);
            let within = |v: f64, r: &Range<usize>| {
                v >= r.start as f64 - merge.margin_px && v < r.end as f64 + merge.margin_px
            };
            if within(cy, &tile.core_y) && within(cx, &tile.core_x) {
                candidates.push(TileComponent {
                    tile: index,
                    component: c,
                });
            }
        }
    }
    let kept = candidates.len();
    let components = merge_across_tiles(candidates, h * w, w, merge.merge_threshold);
    let merged = kept - components.len();
    Ok(TiledExtraction {
        components,
        mean,
        correlation,
        pnr,
        seeds,
        kept,
        merged,
    })
}

/// Footprint weight from which a pixel counts as part of a component (CaImAn binarises at 0.2).
const SUPPORT: f32 = 0.2;

/// Merges components whose supports (weight >= 0.2) overlap by at least half the smaller one, or
/// that come from different tiles and share a pixel while their traces correlate above
/// `threshold` (union-find, so chains of pieces join). A merged component's
/// footprint is the pixelwise maximum of its members' (peak 1) and its trace that of its member
/// with the largest footprint mass (the global refit re-estimates it). The output is sorted by
/// footprint position (first pixel), whatever the input order.
pub fn merge_across_tiles(
    mut candidates: Vec<TileComponent>,
    pixels: usize,
    width: usize,
    threshold: f64,
) -> Vec<Component> {
    candidates.sort_by(|a, b| {
        a.tile
            .cmp(&b.tile)
            .then_with(|| a.component.pixels.first().cmp(&b.component.pixels.first()))
            .then_with(|| a.component.seed.cmp(&b.component.seed))
    });
    let n = candidates.len();
    let mut by_pixel: Vec<Vec<u32>> = vec![Vec::new(); pixels];
    for (i, c) in candidates.iter().enumerate() {
        for (&p, &v) in c.component.pixels.iter().zip(&c.component.weights) {
            if v >= SUPPORT && (p as usize) < pixels {
                by_pixel[p as usize].push(i as u32);
            }
        }
    }
    // Shared support pixels of every pair of candidates.
    let mut shared: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for list in &by_pixel {
        for (a, &i) in list.iter().enumerate() {
            for &j in &list[a + 1..] {
                let (i, j) = (i.min(j) as usize, i.max(j) as usize);
                *shared.entry((i, j)).or_insert(0) += 1;
            }
        }
    }
    let support = |i: usize| {
        candidates[i]
            .component
            .weights
            .iter()
            .filter(|&&v| v >= SUPPORT)
            .count()
    };
    let mut parent: Vec<usize> = (0..n).collect();
    for ((i, j), common) in shared {
        let (a, b) = (&candidates[i].component, &candidates[j].component);
        // The same object seen twice (a duplicate from two tiles, or a fragment a tile split off
        // near its halo's edge): half the smaller support inside the other. Pieces of one
        // structure in different tiles (a dendrite crossing the edge) overlap less but share
        // their activity; within a tile, CNMF's own merge already judged the correlation.
        let contained = 2 * common >= support(i).min(support(j));
        let correlated = candidates[i].tile != candidates[j].tile
            && pearson(
                ndarray::ArrayView1::from(&a.trace[..]),
                ndarray::ArrayView1::from(&b.trace[..]),
            ) > threshold;
        if contained || correlated {
            let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
            if ri != rj {
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut out: Vec<Component> = groups
        .into_values()
        .map(|members| {
            if members.len() == 1 {
                return candidates[members[0]].component.clone();
            }
            let mut acc: BTreeMap<u32, f32> = BTreeMap::new();
            for &m in &members {
                let c = &candidates[m].component;
                for (&p, &v) in c.pixels.iter().zip(&c.weights) {
                    let e = acc.entry(p).or_insert(0.0);
                    *e = e.max(v);
                }
            }
            let mass = |m: &usize| candidates[*m].component.weights.iter().sum::<f32>();
            let biggest = members
                .iter()
                .copied()
                .max_by(|a, b| mass(a).total_cmp(&mass(b)).then(b.cmp(a)))
                .unwrap_or(members[0]);
            let peak = acc
                .values()
                .copied()
                .fold(0.0f32, f32::max)
                .max(f32::MIN_POSITIVE);
            let mut c = Component {
                pixels: acc.keys().copied().collect(),
                weights: acc.values().map(|v| v / peak).collect(),
                trace: candidates[biggest].component.trace.clone(),
                seed: candidates[biggest].component.seed,
            };
            let [cy, cx] = c.centroid(width);
            c.seed = [cy.round() as usize, cx.round() as usize];
            c
        })
        .collect();
    out.sort_by(|a, b| {
        a.pixels
            .first()
            .cmp(&b.pixels.first())
            .then_with(|| a.seed.cmp(&b.seed))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const W: usize = 60;

    /// A component covering rows `y0..y1` of columns `x0..x1` with weight 1 and the given trace.
    fn rect(tile: usize, y: Range<usize>, x: Range<usize>, trace: &[f32]) -> TileComponent {
        let mut pixels = Vec::new();
        for yy in y.clone() {
            for xx in x.clone() {
                pixels.push((yy * W + xx) as u32);
            }
        }
        let weights = vec![1.0; pixels.len()];
        TileComponent {
            tile,
            component: Component {
                pixels,
                weights,
                trace: trace.to_vec(),
                seed: [y.start, x.start],
            },
        }
    }

    fn trace(seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, 0);
        (0..200).map(|_| rng.uniform() as f32).collect()
    }

    #[test]
    fn pieces_of_one_structure_join_and_neighbours_stay_apart() {
        let (a, b) = (trace(1), trace(2));
        let noisy_a: Vec<f32> = a.iter().zip(trace(3)).map(|(v, n)| v + 0.1 * n).collect();
        let candidates = vec![
            // A horizontal process cut into three pieces by tiles 0, 1, 2, overlapping by 4 px.
            rect(0, 10..12, 0..24, &a),
            rect(1, 10..12, 20..44, &noisy_a),
            rect(2, 10..12, 40..60, &a),
            // A duplicate of one cell seen by tiles 0 and 1 (traces differ a little).
            rect(0, 30..38, 18..26, &b),
            rect(1, 30..38, 19..27, &trace(4)),
            // A neighbour touching that cell with unrelated activity, in tile 2.
            rect(2, 30..38, 25..33, &trace(5)),
        ];
        let out = merge_across_tiles(candidates.clone(), W * 50, W, 0.8);
        assert_eq!(
            out.len(),
            3,
            "{:?}",
            out.iter().map(|c| c.pixels.len()).collect::<Vec<_>>()
        );
        // The process: all 120 pixels in one component.
        assert!(out.iter().any(|c| c.pixels.len() == 2 * 60));
        // The duplicate merged by containment (8x9 union), the neighbour kept apart.
        assert!(out.iter().any(|c| c.pixels.len() == 8 * 9));
        assert!(out.iter().any(|c| c.pixels.len() == 8 * 8));
        // Whatever order the tiles finished in, the same result.
        let mut shuffled = candidates;
        shuffled.reverse();
        shuffled.swap(0, 3);
        assert_eq!(merge_across_tiles(shuffled, W * 50, W, 0.8), out);
    }

    #[test]
    fn windows_outside_the_field_and_misshapen_reads_are_refused() {
        let movie = ndarray::Array3::<f32>::zeros((20, 16, 16));
        let merge = MergeParams {
            margin_px: 1.0,
            merge_threshold: 0.8,
        };
        let run = |window: TileWindow| {
            extract_tiled::<KernelError>(
                (20, 16, 16),
                &[window],
                |_, t| {
                    Ok(movie
                        .slice(s![.., t.halo_y.clone(), t.halo_x.clone()])
                        .to_owned())
                },
                &DetectParams::default(),
                None,
                &CnmfParams::default(),
                &merge,
            )
        };
        let bad = TileWindow {
            core_y: 0..8,
            core_x: 0..8,
            halo_y: 0..20,
            halo_x: 0..12,
        };
        assert!(matches!(run(bad), Err(KernelError::Shape(_))));
        // A reader that returns another box than the halo.
        let window = TileWindow {
            core_y: 0..8,
            core_x: 0..8,
            halo_y: 0..12,
            halo_x: 0..12,
        };
        let r = extract_tiled::<KernelError>(
            (20, 16, 16),
            &[window],
            |_, _| Ok(movie.clone()),
            &DetectParams::default(),
            None,
            &CnmfParams::default(),
            &merge,
        );
        match r {
            Err(KernelError::Shape(m)) => assert!(m.contains("tile 0 read as"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
