//! Detection and initialisation: greedy seeding on the correlation x peak-to-noise image of a
//! band-passed movie (CNMF-E, Zhou et al. 2018, `init_neurons_corr_pnr`), each seed's footprint
//! grown from the correlation of its neighbours with the seed's trace, then deflated from the data
//! so overlapping neighbours are found on the residual. Footprints stay within twice the radius of
//! their seed ([`Morphology::Soma`]) or, without a shape prior ([`Morphology::Any`]), grow over
//! every connected pixel whose trace correlates with the seed's, on a high-passed residual
//! (dendrites, axons).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::filter::BandPass;
use super::{Component, PixelMovie};
use crate::stats::{PsdAverage, noise_fft, noise_image};
use crate::summary::LocalCorrelation;
use crate::vector::{dot, dot_offset};

/// Detection parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectParams {
    /// Expected soma radius in pixels (CaImAn's gSig); sets filters, windows and sizes.
    pub radius_px: f64,
    /// Seeds need a local correlation at least this high (band-passed movie).
    pub min_corr: f32,
    /// ... and a peak-to-noise ratio at least this high.
    pub min_pnr: f32,
    /// Pixels join a footprint when their trace correlates with the seed's above this.
    pub pixel_corr: f32,
    /// Stop after this many components (0: no limit).
    pub max_components: usize,
    /// Membership correlations use traces summed over this many frames: calcium transients last
    /// several frames while shot noise does not, so binning raises the correlation of dim cells'
    /// pixels (Suite2p bins the movie for detection the same way). 1 disables binning.
    pub bin_frames: usize,
    /// Shape prior of the footprints: somata (within twice the radius of the seed) or any shape
    /// the activity correlation connects (dendrites, axons).
    pub morphology: Morphology,
}

/// How far a footprint may grow from its seed during detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Morphology {
    /// Compact somata: pixels within `2 radius_px` of the seed.
    #[default]
    Soma,
    /// No shape prior: every pixel connected to the seed through pixels whose traces correlate
    /// with the seed's (the activity-based alternative for dendrites and axons).
    Any,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            radius_px: 5.0,
            min_corr: 0.6,
            min_pnr: 6.0,
            pixel_corr: 0.4,
            max_components: 0,
            bin_frames: 1,
            morphology: Morphology::Soma,
        }
    }
}

/// Images computed for detection (kept for reports).
#[derive(Debug, Clone)]
pub struct DetectionImages {
    /// Mean over frames.
    pub mean: Array2<f32>,
    pub correlation: Array2<f32>,
    pub pnr: Array2<f32>,
}

/// Finds and initialises components in `movie` (t, y, x). Returns them with the seeding images.
pub fn detect(movie: ArrayView3<f32>, params: &DetectParams) -> (Vec<Component>, DetectionImages) {
    detect_within(movie, params, None)
}

/// [`detect`], seeding components only where `seedable` (same shape as a frame) is true, e.g.
/// away from the borders a registered movie fills in for content that moved out of view.
/// Footprints may still extend over the other pixels.
pub fn detect_within(
    movie: ArrayView3<f32>,
    params: &DetectParams,
    seedable: Option<ArrayView2<bool>>,
) -> (Vec<Component>, DetectionImages) {
    let (images, spare) = detection_images(movie, params);
    let found = match params.morphology {
        Morphology::Soma => {
            let pm = PixelMovie::from_frames_in(movie, spare);
            seed_components(
                Residual::new(&pm.data, Some(&images.mean)),
                &images,
                params,
                seedable,
            )
        }
        Morphology::Any => {
            let high = high_passed(movie, &images.mean, params, spare);
            seed_components(Residual::new(&high.data, None), &images, params, seedable)
        }
    };
    (found, images)
}

/// [`detect_within`] on a movie the caller demixes next: the movie is transposed to pixel-major
/// once, that copy serves as detection's residual (rows are copied only where a component
/// deflates them) and is returned for demixing, and the frame-major movie is freed as soon as it
/// is transposed. For somata at most two tile-sized copies are held at any time (three for
/// [`Morphology::Any`], whose residual is a high-passed copy). The components are those of
/// [`detect_within`].
pub fn detect_pixel_major(
    movie: Array3<f32>,
    params: &DetectParams,
    seedable: Option<ArrayView2<bool>>,
) -> (Vec<Component>, DetectionImages, PixelMovie) {
    let (images, spare) = detection_images(movie.view(), params);
    match params.morphology {
        Morphology::Soma => {
            let pm = PixelMovie::from_frames_in(movie.view(), spare);
            drop(movie);
            let found = seed_components(
                Residual::new(&pm.data, Some(&images.mean)),
                &images,
                params,
                seedable,
            );
            (found, images, pm)
        }
        Morphology::Any => {
            let high = high_passed(movie.view(), &images.mean, params, spare);
            let pm = PixelMovie::from_frames(movie.view());
            drop(movie);
            let found = seed_components(Residual::new(&high.data, None), &images, params, seedable);
            (found, images, pm)
        }
    }
}

/// The seeding images: mean, local correlation and peak-to-noise ratio of the band-passed,
/// mean-free movie. Also hands back the band-passed movie's allocation, a tile-sized buffer for the
/// caller's next working array.
fn detection_images(movie: ArrayView3<f32>, params: &DetectParams) -> (DetectionImages, Vec<f32>) {
    let (t, h, w) = movie.dim();
    let r = params.radius_px.max(1.0);
    let mean = movie
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array2::zeros((h, w)));
    // Band-passed, mean-free movie for the seeding images (one filter and buffers per task), and
    // its maximum over frames, taken while each frame is in cache.
    let mut filtered = Array3::<f32>::zeros((t, h, w));
    let peak = || Array2::from_elem((h, w), f32::NEG_INFINITY);
    let max = filtered
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .fold(
            || (BandPass::new(r / 2.0, 2.0 * r), peak()),
            |(mut bp, mut max), (i, mut out)| {
                bp.apply_centred(
                    movie.index_axis(Axis(0), i),
                    Some(mean.view()),
                    out.view_mut(),
                );
                ndarray::Zip::from(&mut max)
                    .and(&out)
                    .for_each(|m, &v| *m = m.max(v));
                (bp, max)
            },
        )
        .map(|(_, max)| max)
        .reduce(peak, |mut a, b| {
            ndarray::Zip::from(&mut a)
                .and(&b)
                .for_each(|m, &v| *m = m.max(v));
            a
        });
    let correlation = LocalCorrelation::from_movie(filtered.view()).image();
    let noise = noise_image(filtered.view(), PsdAverage::Mean);
    let pnr = ndarray::Zip::from(&max)
        .and(&noise)
        .map_collect(|&m, &s| if s > 0.0 { m / s } else { 0.0 });
    let (spare, _) = filtered.into_raw_vec_and_offset();
    (
        DetectionImages {
            mean,
            correlation,
            pnr,
        },
        spare,
    )
}

/// The movie minus its mean with smooth background (neuropil) removed by a high-pass (each frame
/// minus its Gaussian blur at 2r), pixel-major: the residual of [`Morphology::Any`], whose
/// footprints would otherwise flood the areas that background's shared fluctuations correlate.
/// Thin processes pass nearly unchanged.
fn high_passed(
    movie: ArrayView3<f32>,
    mean: &Array2<f32>,
    params: &DetectParams,
    mut buffer: Vec<f32>,
) -> PixelMovie {
    let (t, h, w) = movie.dim();
    let r = params.radius_px.max(1.0);
    // Every element is written below.
    buffer.resize(t * h * w, 0.0);
    let mut high = Array3::from_shape_vec((t, h, w), buffer).expect("sized to the movie");
    high.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || BandPass::new(0.0, 2.0 * r),
            |hp, (i, out)| hp.apply_centred(movie.index_axis(Axis(0), i), Some(mean.view()), out),
        );
    PixelMovie::from_frames(high.view())
}

/// Detection's residual: a pixel-major movie minus a per-pixel offset (the mean), deflated as
/// components are found. Rows are read from the shared movie until a component deflates them;
/// the first deflation copies the row.
struct Residual<'a> {
    base: ArrayView2<'a, f32>,
    offset: Option<&'a [f32]>,
    own: Vec<Option<Vec<f32>>>,
}

impl<'a> Residual<'a> {
    fn new(base: &'a Array2<f32>, offset: Option<&'a Array2<f32>>) -> Residual<'a> {
        Residual {
            base: base.view(),
            offset: offset
                .and_then(|o| o.as_slice())
                .filter(|o| o.len() == base.nrows()),
            own: vec![None; base.nrows()],
        }
    }

    fn frames(&self) -> usize {
        self.base.ncols()
    }

    fn offset(&self, p: usize) -> f32 {
        self.offset.map_or(0.0, |o| o[p])
    }

    /// `acc += residual[p]`.
    fn add_to(&self, p: usize, acc: &mut [f32]) {
        match &self.own[p] {
            Some(row) => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v),
            None => {
                let o = self.offset(p);
                acc.iter_mut()
                    .zip(self.base.row(p))
                    .for_each(|(a, &v)| *a += v - o);
            }
        }
    }

    /// `residual[p] . c`.
    fn dot(&self, p: usize, c: &[f32]) -> f32 {
        match (&self.own[p], self.base.row(p).to_slice()) {
            (Some(row), _) => dot(row, c),
            (None, Some(row)) => dot_offset(row, self.offset(p), c),
            (None, None) => dot_offset(&self.base.row(p).to_vec(), self.offset(p), c),
        }
    }

    /// `residual[p] -= a c`.
    fn deflate(&mut self, p: usize, a: f32, c: &[f32]) {
        let o = self.offset(p);
        let base = &self.base;
        let row = self.own[p].get_or_insert_with(|| base.row(p).iter().map(|v| v - o).collect());
        row.iter_mut().zip(c).for_each(|(v, &ci)| *v -= a * ci);
    }
}

/// Greedy seeding on the images, each footprint grown from the residual and deflated from it.
fn seed_components(
    mut residual: Residual,
    images: &DetectionImages,
    params: &DetectParams,
    seedable: Option<ArrayView2<bool>>,
) -> Vec<Component> {
    let (h, w) = images.mean.dim();
    let t = residual.frames();
    let seedable = seedable.filter(|m| m.dim() == (h, w));
    let r = params.radius_px.max(1.0);
    let (correlation, pnr) = (&images.correlation, &images.pnr);

    // Candidate seeds: local maxima of corr x pnr within the radius, above both thresholds.
    let score = ndarray::Zip::from(correlation)
        .and(pnr)
        .map_collect(|&c, &p| {
            if c >= params.min_corr && p >= params.min_pnr {
                c * p
            } else {
                0.0
            }
        });
    let ri = r.ceil() as isize;
    let mut seeds: Vec<(f32, usize, usize)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = score[[y, x]];
            if v <= 0.0 || seedable.is_some_and(|m| !m[[y, x]]) {
                continue;
            }
            let mut is_max = true;
            'nb: for dy in -ri..=ri {
                for dx in -ri..=ri {
                    let (qy, qx) = (y as isize + dy, x as isize + dx);
                    if (dy, dx) == (0, 0)
                        || qy < 0
                        || qx < 0
                        || qy >= h as isize
                        || qx >= w as isize
                    {
                        continue;
                    }
                    let q = score[[qy as usize, qx as usize]];
                    // Ties break by position so the order is deterministic.
                    if q > v || (q == v && (qy as usize, qx as usize) < (y, x)) {
                        is_max = false;
                        break 'nb;
                    }
                }
            }
            if is_max {
                seeds.push((v, y, x));
            }
        }
    }
    seeds.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));

    let mut covered = vec![false; h * w];
    let mut comps = Vec::new();
    let max_dist2 = match params.morphology {
        Morphology::Soma => Some((2.0 * r).powi(2)),
        Morphology::Any => None,
    };
    let min_size = (std::f64::consts::PI * r * r / 4.0).ceil() as usize;
    let bin_frames = params.bin_frames.clamp(1, t.max(1));
    for (_, sy, sx) in seeds {
        if params.max_components > 0 && comps.len() >= params.max_components {
            break;
        }
        if covered[sy * w + sx] {
            continue;
        }
        // Seed trace: the residual averaged over the 3x3 neighbourhood.
        let mut c = vec![0.0f32; t];
        let mut n = 0.0;
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                let (qy, qx) = (sy as isize + dy, sx as isize + dx);
                if qy < 0 || qx < 0 || qy >= h as isize || qx >= w as isize {
                    continue;
                }
                residual.add_to(qy as usize * w + qx as usize, &mut c);
                n += 1.0;
            }
        }
        c.iter_mut().for_each(|v| *v /= n);
        // A seed whose residual trace has no transient above the noise was explained already.
        let noise = noise_fft(&c, PsdAverage::Mean) as f32;
        let peak = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if noise <= 0.0 || peak / noise < params.min_pnr / 2.0 {
            continue;
        }
        let cc: f32 = c.iter().map(|v| v * v).sum();
        let cb = bin(&c, bin_frames);
        let cb_norm = cb.iter().map(|v| v * v).sum::<f32>().sqrt();
        // Membership: correlation of the 3x3-averaged pixel trace with the seed trace (single
        // pixels are too noisy at two-photon photon counts), computed for the pixels the flood
        // fill reaches.
        let member_corr = |y: usize, x: usize, smooth: &mut Vec<f32>| -> f32 {
            smooth.iter_mut().for_each(|v| *v = 0.0);
            let mut n = 0.0f32;
            for qy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for qx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    residual.add_to(qy * w + qx, smooth);
                    n += 1.0;
                }
            }
            let (mut sd, mut ss) = (0.0f32, 0.0f32);
            for (&sv, &ci) in bin(smooth, bin_frames).iter().zip(cb.iter()) {
                let v = sv / n;
                sd += v * ci;
                ss += v * v;
            }
            if ss > 0.0 && cb_norm > 0.0 {
                sd / (ss.sqrt() * cb_norm)
            } else {
                0.0
            }
        };
        // Footprint: pixels connected to the seed whose correlation passes the threshold (within
        // 2r of the seed for somata; anywhere for `Morphology::Any`).
        let mut smooth = vec![0.0f32; t];
        let mut visited = std::collections::HashSet::new();
        let mut inside: Vec<usize> = Vec::new();
        let mut stack = vec![sy * w + sx];
        while let Some(p) = stack.pop() {
            if !visited.insert(p) {
                continue;
            }
            let (y, x) = (p / w, p % w);
            if let Some(limit) = max_dist2 {
                let d2 = (y as f64 - sy as f64).powi(2) + (x as f64 - sx as f64).powi(2);
                if d2 > limit {
                    continue;
                }
            }
            if member_corr(y, x, &mut smooth) < params.pixel_corr {
                continue;
            }
            inside.push(p);
            if y > 0 {
                stack.push(p - w);
            }
            if y + 1 < h {
                stack.push(p + w);
            }
            if x > 0 {
                stack.push(p - 1);
            }
            if x + 1 < w {
                stack.push(p + 1);
            }
        }
        inside.sort_unstable();
        // Amplitude: regression of each member pixel on the seed trace.
        let amp_of = |p: usize| -> f32 { (residual.dot(p, &c) / cc).max(0.0) };
        let support: Vec<(usize, f32)> = inside
            .into_iter()
            .map(|p| (p, amp_of(p)))
            .filter(|&(_, a)| a > 0.0)
            .collect();
        if support.len() < min_size {
            continue;
        }
        let amax = support.iter().map(|&(_, a)| a).fold(0.0f32, f32::max);
        let mut comp = Component {
            pixels: Vec::new(),
            weights: Vec::new(),
            trace: Vec::new(),
            seed: [sy, sx],
        };
        for &(p, a) in &support {
            comp.pixels.push(p as u32);
            comp.weights.push(a / amax);
            // Deflate: remove this component's contribution from the residual.
            residual.deflate(p, a, &c);
            if a >= 0.5 * amax {
                covered[p] = true;
            }
        }
        comp.trace = c.iter().map(|v| v * amax).collect();
        comps.push(comp);
    }
    comps
}

/// Sums of consecutive runs of `k` samples (a last, shorter run is dropped unless it is the only
/// one). `k = 1` returns the trace unchanged.
fn bin(trace: &[f32], k: usize) -> std::borrow::Cow<'_, [f32]> {
    if k <= 1 || trace.len() < 2 * k {
        return std::borrow::Cow::Borrowed(trace);
    }
    std::borrow::Cow::Owned(trace.chunks_exact(k).map(|c| c.iter().sum()).collect())
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::Residual;

    /// The copy-on-write residual against a dense one, deflated the same way.
    #[test]
    fn residual_matches_a_dense_mean_free_copy() {
        let (p, t) = (6, 37);
        let base = Array2::from_shape_fn((p, t), |(i, j)| 500.0 + ((i * 31 + j * 17) % 23) as f32);
        let mean = Array2::from_shape_fn((2, 3), |(y, x)| 500.0 + (y * 3 + x) as f32);
        let mut dense = base.clone();
        for (i, mut row) in dense.rows_mut().into_iter().enumerate() {
            row.mapv_inplace(|v| v - mean[[i / 3, i % 3]]);
        }
        let mut residual = Residual::new(&base, Some(&mean));
        let c: Vec<f32> = (0..t).map(|j| (j % 5) as f32 - 2.0).collect();
        for (p, a) in [(1, 0.5f32), (4, 2.0), (1, -0.25)] {
            residual.deflate(p, a, &c);
            for (v, &ci) in dense.row_mut(p).iter_mut().zip(&c) {
                *v -= a * ci;
            }
        }
        for q in 0..p {
            let mut acc = vec![1.0f32; t];
            residual.add_to(q, &mut acc);
            for (a, d) in acc.iter().zip(dense.row(q)) {
                assert!(
                    (a - (1.0 + d)).abs() < 1e-3,
                    "pixel {q}: {a} vs {}",
                    1.0 + d
                );
            }
            let want: f32 = dense.row(q).iter().zip(&c).map(|(v, ci)| v * ci).sum();
            assert!((residual.dot(q, &c) - want).abs() < 1e-2, "pixel {q}");
        }
        // Without an offset the rows are the movie's own.
        let plain = Residual::new(&base, None);
        assert_eq!(
            plain.dot(0, &c),
            crate::vector::dot(base.row(0).to_slice().unwrap(), &c)
        );
    }
}
