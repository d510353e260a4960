//! Summary images that make cells visible, from statistics that merge across time chunks.
//!
//! [`LocalCorrelation`] keeps, per pixel, the frame count, mean, second central moment and the
//! co-moments with four neighbours (right, down, down-right, down-left); chunks merge exactly with
//! the pairwise update of Chan, Golub & LeVeque (1979):
//!
//! ```text
//! n = n_a + n_b,  d = mean_b - mean_a,  mean = mean_a + d n_b / n
//! M2 = M2_a + M2_b + d^2 n_a n_b / n,   C_pq = C_pq,a + C_pq,b + d_p d_q n_a n_b / n
//! ```
//!
//! The local correlation image (CaImAn `local_correlations`, 8-neighbourhood) is then
//! `corr(p) = mean_{q in N8(p)} C_pq / sqrt(M2_p M2_q)`, and the peak-to-noise ratio image (CNMF-E,
//! Zhou et al. 2018) is `pnr(p) = (max_t y_p - mean_t y_p) / sigma_p` with `sigma_p` the PSD noise.

use ndarray::{Array2, ArrayView3, Zip, s};
use rayon::prelude::*;

use crate::KernelError;

/// Neighbour offsets whose co-moments are stored at the first pixel of each pair.
const DIRS: [(isize, isize); 4] = [(0, 1), (1, 0), (1, 1), (1, -1)];

/// Calls `f(direction, (y, x), (qy, qx))` for every pixel whose neighbour `(qy, qx)` in each of the
/// four stored directions lies inside an `h x w` field.
fn for_each_pair(h: usize, w: usize, mut f: impl FnMut(usize, (usize, usize), (usize, usize))) {
    for (k, &(dy, dx)) in DIRS.iter().enumerate() {
        for y in 0..h {
            let qy = y as isize + dy;
            if qy < 0 || qy >= h as isize {
                continue;
            }
            for x in 0..w {
                let qx = x as isize + dx;
                if qx < 0 || qx >= w as isize {
                    continue;
                }
                f(k, (y, x), (qy as usize, qx as usize));
            }
        }
    }
}

/// Mergeable statistics for the local correlation image.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalCorrelation {
    pub frames: u64,
    pub mean: Array2<f64>,
    pub m2: Array2<f64>,
    /// `co[d][p]`: co-moment of pixel p with `p + DIRS[d]` (0 where the neighbour is outside).
    pub co: [Array2<f64>; 4],
}

impl LocalCorrelation {
    /// Statistics of zero frames.
    pub fn empty(h: usize, w: usize) -> LocalCorrelation {
        let z = || Array2::<f64>::zeros((h, w));
        LocalCorrelation {
            frames: 0,
            mean: z(),
            m2: z(),
            co: [z(), z(), z(), z()],
        }
    }

    /// Statistics of a movie (t, y, x). Rows of the field are done in parallel, each over blocks
    /// of [`BLOCK_FRAMES`] frames: a block's rows `y` and `y + 1` are copied out of the frames,
    /// its moments are taken two-pass about the block's own mean in f32 (eight lanes per
    /// instruction, the deviations small), and the block is merged into the row's f64 totals
    /// with the update above. Every pixel still goes through its frames in order, so the result
    /// does not depend on the number of threads; it equals the frame-by-frame f64 loop of the
    /// tests' reference to rounding.
    pub fn from_movie(movie: ArrayView3<f32>) -> LocalCorrelation {
        let (t, h, w) = movie.dim();
        let mut s = LocalCorrelation::empty(h, w);
        if t == 0 {
            return s;
        }
        s.frames = t as u64;
        let rows: Vec<RowMoments> = (0..h)
            .into_par_iter()
            .map(|y| RowMoments::of(movie, y))
            .collect();
        for (y, r) in rows.into_iter().enumerate() {
            s.mean
                .row_mut(y)
                .assign(&ndarray::ArrayView1::from(&r.mean));
            s.m2.row_mut(y).assign(&ndarray::ArrayView1::from(&r.m2));
            for (k, c) in r.co.iter().enumerate() {
                s.co[k].row_mut(y).assign(&ndarray::ArrayView1::from(c));
            }
        }
        s
    }

    /// Combines statistics of two disjoint sets of frames of the same field.
    pub fn merge(self, other: &LocalCorrelation) -> Result<LocalCorrelation, KernelError> {
        if self.mean.dim() != other.mean.dim() {
            return Err(KernelError::Shape(format!(
                "cannot merge correlation statistics of fields {:?} and {:?}",
                self.mean.dim(),
                other.mean.dim()
            )));
        }
        if other.frames == 0 {
            return Ok(self);
        }
        if self.frames == 0 {
            return Ok(other.clone());
        }
        let (na, nb) = (self.frames as f64, other.frames as f64);
        let n = na + nb;
        let f = na * nb / n;
        let delta = &other.mean - &self.mean;
        let (h, w) = self.mean.dim();
        let mut out = self;
        Zip::from(&mut out.mean)
            .and(&delta)
            .for_each(|m, &d| *m += d * nb / n);
        Zip::from(&mut out.m2)
            .and(&other.m2)
            .and(&delta)
            .for_each(|a, &b, &d| *a += b + d * d * f);
        for_each_pair(h, w, |k, (y, x), (qy, qx)| {
            out.co[k][[y, x]] += other.co[k][[y, x]] + delta[[y, x]] * delta[[qy, qx]] * f;
        });
        out.frames += other.frames;
        Ok(out)
    }

    /// The local correlation image: mean Pearson correlation with the (up to 8) neighbours.
    /// Constant pixels correlate 0 with everything.
    pub fn image(&self) -> Array2<f32> {
        let (h, w) = self.mean.dim();
        let mut sum = Array2::<f64>::zeros((h, w));
        let mut count = Array2::<f64>::zeros((h, w));
        for_each_pair(h, w, |k, (y, x), (qy, qx)| {
            let den = (self.m2[[y, x]] * self.m2[[qy, qx]]).sqrt();
            let r = if den > 0.0 {
                self.co[k][[y, x]] / den
            } else {
                0.0
            };
            sum[[y, x]] += r;
            sum[[qy, qx]] += r;
            count[[y, x]] += 1.0;
            count[[qy, qx]] += 1.0;
        });
        Zip::from(&sum)
            .and(&count)
            .map_collect(|&s, &c| if c > 0.0 { (s / c) as f32 } else { 0.0 })
    }
}

/// Frames per block in [`LocalCorrelation::from_movie`]: a block's two rows (2 x 64 x width
/// floats) stay in cache between its passes.
const BLOCK_FRAMES: usize = 64;

/// One row's statistics in [`LocalCorrelation::from_movie`]: mean, M2 and the co-moments with the
/// right neighbour and the three below (`DIRS`), in f64.
struct RowMoments {
    mean: Vec<f64>,
    m2: Vec<f64>,
    co: [Vec<f64>; 4],
}

impl RowMoments {
    fn of(movie: ArrayView3<f32>, y: usize) -> RowMoments {
        crate::vector::avx2(
            #[inline(always)]
            || RowMoments::of_portable(movie, y),
        )
    }

    #[inline(always)]
    fn of_portable(movie: ArrayView3<f32>, y: usize) -> RowMoments {
        let (t, h, w) = movie.dim();
        let below = y + 1 < h;
        let z = || vec![0.0f64; w];
        let mut r = RowMoments {
            mean: z(),
            m2: z(),
            co: [z(), z(), z(), z()],
        };
        // The row below's running mean (its own task keeps its full statistics).
        let mut mean_b = z();
        let mut n = 0usize;
        let bf = BLOCK_FRAMES.min(t);
        // Deviations of the block's frames from the block's mean, frame after frame.
        let (mut da, mut db) = (vec![0.0f32; bf * w], vec![0.0f32; bf * w]);
        // Block means: in f32 for the deviations, in f64 for the merge.
        let (mut ma, mut mb) = (vec![0.0f32; w], vec![0.0f32; w]);
        let (mut ma64, mut mb64) = (z(), z());
        let mut acc: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0.0f32; w]);
        for f0 in (0..t).step_by(bf) {
            let nb = bf.min(t - f0);
            // The block mean is summed in f64 (an f32 sum of values on a large baseline loses
            // digits the correlation of small fluctuations needs).
            let copy = |row: usize, dst: &mut [f32], m: &mut [f32], sum: &mut [f64]| {
                sum.iter_mut().for_each(|v| *v = 0.0);
                for (f, d) in dst.chunks_exact_mut(w).take(nb).enumerate() {
                    let src = movie.slice(s![f0 + f, row, ..]);
                    match src.as_slice() {
                        Some(src) => d.copy_from_slice(src),
                        None => d.iter_mut().zip(src).for_each(|(o, &v)| *o = v),
                    }
                    sum.iter_mut()
                        .zip(d.iter())
                        .for_each(|(s, &v)| *s += f64::from(v));
                }
                for (mi, s) in m.iter_mut().zip(sum.iter_mut()) {
                    *s /= nb as f64;
                    *mi = *s as f32;
                }
                for d in dst.chunks_exact_mut(w).take(nb) {
                    d.iter_mut().zip(m.iter()).for_each(|(v, &mi)| *v -= mi);
                }
            };
            copy(y, &mut da, &mut ma, &mut ma64);
            if below {
                copy(y + 1, &mut db, &mut mb, &mut mb64);
            }
            acc.iter_mut()
                .for_each(|a| a.iter_mut().for_each(|v| *v = 0.0));
            let [m2, c0, c1, c2, c3] = &mut acc;
            for f in 0..nb {
                let a = &da[f * w..(f + 1) * w];
                for (o, &v) in m2.iter_mut().zip(a) {
                    *o += v * v;
                }
                for (o, (&v, &r)) in c0.iter_mut().zip(a.iter().zip(&a[1..])) {
                    *o += v * r;
                }
                if below {
                    let b = &db[f * w..(f + 1) * w];
                    for (o, (&v, &q)) in c1.iter_mut().zip(a.iter().zip(b)) {
                        *o += v * q;
                    }
                    for (o, (&v, &q)) in c2.iter_mut().zip(a.iter().zip(&b[1..])) {
                        *o += v * q;
                    }
                    for (o, (&v, &q)) in c3[1..].iter_mut().zip(a[1..].iter().zip(b)) {
                        *o += v * q;
                    }
                }
            }
            // Merge the block (nb frames, mean ma64 / mb64) into the totals (n frames). Its moments
            // are about the f32-rounded means; that differs from moments about the exact ones by
            // nb e^2 for a rounding e, far below the f32 sums' own rounding.
            let (na, nbf) = (n as f64, nb as f64);
            let tot = na + nbf;
            let fct = na * nbf / tot;
            let delta = |m: &[f64], run: &[f64], x: usize| m[x] - run[x];
            for x in 0..w {
                let dx = delta(&ma64, &r.mean, x);
                r.m2[x] += f64::from(m2[x]) + dx * dx * fct;
                if x + 1 < w {
                    r.co[0][x] += f64::from(c0[x]) + dx * delta(&ma64, &r.mean, x + 1) * fct;
                }
                if below {
                    r.co[1][x] += f64::from(c1[x]) + dx * delta(&mb64, &mean_b, x) * fct;
                    if x + 1 < w {
                        r.co[2][x] += f64::from(c2[x]) + dx * delta(&mb64, &mean_b, x + 1) * fct;
                    }
                    if x > 0 {
                        r.co[3][x] += f64::from(c3[x]) + dx * delta(&mb64, &mean_b, x - 1) * fct;
                    }
                }
            }
            for x in 0..w {
                r.mean[x] += delta(&ma64, &r.mean, x) * nbf / tot;
                if below {
                    mean_b[x] += delta(&mb64, &mean_b, x) * nbf / tot;
                }
            }
            n += nb;
        }
        r
    }
}

/// Peak-to-noise ratio image `(max - mean) / noise` (0 where the noise is 0).
pub fn pnr_image(max: &Array2<f32>, mean: &Array2<f32>, noise: &Array2<f32>) -> Array2<f32> {
    Zip::from(max)
        .and(mean)
        .and(noise)
        .map_collect(|&mx, &m, &s| if s > 0.0 { (mx - m) / s } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use ndarray::{Array3, s};

    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            ab += (x - ma) * (y - mb);
            aa += (x - ma).powi(2);
            bb += (y - mb).powi(2);
        }
        if aa == 0.0 || bb == 0.0 {
            0.0
        } else {
            ab / (aa * bb).sqrt()
        }
    }

    /// Slow reference: Pearson correlation with each of the 8 neighbours, averaged.
    fn reference(movie: &Array3<f32>) -> Array2<f32> {
        let (_, h, w) = movie.dim();
        let trace = |y: usize, x: usize| {
            movie
                .slice(s![.., y, x])
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()
        };
        Array2::from_shape_fn((h, w), |(y, x)| {
            let mut acc = Vec::new();
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (qy, qx) = (y as isize + dy, x as isize + dx);
                    if (dy, dx) == (0, 0)
                        || qy < 0
                        || qx < 0
                        || qy >= h as isize
                        || qx >= w as isize
                    {
                        continue;
                    }
                    acc.push(pearson(&trace(y, x), &trace(qy as usize, qx as usize)));
                }
            }
            (acc.iter().sum::<f64>() / acc.len() as f64) as f32
        })
    }

    fn movie() -> Array3<f32> {
        let mut r = Rng::new(6, 0);
        // A correlated blob in the middle over independent noise, with a large offset (uint16-like).
        let drive: Vec<f64> = (0..120).map(|_| r.normal()).collect();
        Array3::from_shape_fn((120, 9, 11), |(t, y, x)| {
            let inside = (y as f64 - 4.0).powi(2) + (x as f64 - 5.0).powi(2) < 6.0;
            (1000.0 + if inside { 5.0 * drive[t] } else { 0.0 } + r.normal()) as f32
        })
    }

    #[test]
    fn matches_the_reference_and_merges_exactly() {
        let m = movie();
        let whole = LocalCorrelation::from_movie(m.view());
        let want = reference(&m);
        for (a, b) in whole.image().iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let merged = LocalCorrelation::from_movie(m.slice(s![..50, .., ..]))
            .merge(&LocalCorrelation::from_movie(m.slice(s![50..71, .., ..])))
            .unwrap()
            .merge(&LocalCorrelation::from_movie(m.slice(s![71.., .., ..])))
            .unwrap();
        // The mean (two blocks of frames here) and M2 against plain f64 sums.
        for ((y, x), &got_mean) in whole.mean.indexed_iter() {
            let tr: Vec<f64> = m
                .slice(s![.., y, x])
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let mean = tr.iter().sum::<f64>() / tr.len() as f64;
            let m2: f64 = tr.iter().map(|v| (v - mean) * (v - mean)).sum();
            assert!(
                (got_mean - mean).abs() < 1e-9 * mean.abs(),
                "mean {got_mean} vs {mean}"
            );
            let got = whole.m2[[y, x]];
            assert!((got - m2).abs() < 1e-4 * m2, "M2 {got} vs {m2}");
        }
        assert_eq!(merged.frames, 120);
        for (a, b) in merged.image().iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-5, "merged {a} vs {b}");
        }
        // Cells stand out: inside the blob correlations are high, outside near 0.
        let img = whole.image();
        assert!(img[[4, 5]] > 0.8 && img[[0, 0]].abs() < 0.3);
        assert!(LocalCorrelation::empty(2, 2).merge(&whole).is_err());
    }

    #[test]
    fn pnr_is_peak_over_noise() {
        let mx = Array2::from_elem((2, 2), 10.0f32);
        let mean = Array2::from_elem((2, 2), 4.0f32);
        let mut noise = Array2::from_elem((2, 2), 2.0f32);
        noise[[1, 1]] = 0.0;
        let p = pnr_image(&mx, &mean, &noise);
        assert_eq!(p[[0, 0]], 3.0);
        assert_eq!(p[[1, 1]], 0.0);
    }
}
