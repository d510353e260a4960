//! Piecewise-rigid registration (NoRMCorre, Pnevmatikakis & Giovannucci 2017; Suite2p "nonrigid"):
//! after the rigid shift, the field is cut into overlapping square blocks (`block_px`, 50% overlap),
//! each block is registered to the same block of the template by phase correlation (search limited to
//! `max_shift_px`), block shifts are smoothed over the 3x3 block neighbourhood (weights: correlation
//! peaks) and interpolated bilinearly between block centres into a per-pixel field `(Dy, Dx)`:
//!
//! ```text
//! registered(y, x) = frame(y + dy_rigid + Dy(y, x), x + dx_rigid + Dx(y, x))   (bilinear)
//! ```

use ndarray::{Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use super::{FrameShift, RigidParams, RigidRegistration, shift_frame};
use crate::KernelError;

/// Parameters of the piecewise-rigid stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiecewiseParams {
    /// Block edge in pixels (NoRMCorre/Suite2p: 128); blocks overlap by half.
    pub block_px: usize,
    /// Largest residual shift of a block after the rigid shift, in pixels.
    pub max_shift_px: f64,
}

impl Default for PiecewiseParams {
    fn default() -> Self {
        PiecewiseParams {
            block_px: 128,
            max_shift_px: 5.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    y0: usize,
    x0: usize,
    reg: RigidRegistration,
}

/// A template prepared for rigid plus piecewise-rigid registration.
#[derive(Debug, Clone)]
pub struct PiecewiseRegistration {
    rigid: RigidRegistration,
    blocks: Vec<Block>,
    /// Block starts along y and x (the grid is their product).
    ys: Vec<usize>,
    xs: Vec<usize>,
    size: usize,
}

/// Shifts of one frame: the rigid part and the residual shift of every block (grid of `ys x xs`).
#[derive(Debug, Clone, PartialEq)]
pub struct PiecewiseShift {
    pub rigid: FrameShift,
    pub block_dy: Array2<f32>,
    pub block_dx: Array2<f32>,
}

fn starts(n: usize, size: usize) -> Vec<usize> {
    if n <= size {
        return vec![0];
    }
    let step = size / 2;
    let mut v: Vec<usize> = (0..)
        .map(|i| i * step)
        .take_while(|&s| s + size <= n)
        .collect();
    if v.last().is_some_and(|&l| l + size < n) {
        v.push(n - size);
    }
    v
}

impl PiecewiseRegistration {
    pub fn new(
        template: Array2<f32>,
        rigid: RigidParams,
        params: &PiecewiseParams,
    ) -> Result<PiecewiseRegistration, KernelError> {
        let (h, w) = template.dim();
        let size = params.block_px.min(h).min(w);
        if size < 16 {
            return Err(KernelError::InvalidParameter {
                name: "block_px",
                reason: format!("blocks must be at least 16 px, got {size}"),
            });
        }
        let (ys, xs) = (starts(h, size), starts(w, size));
        let block_params = RigidParams {
            max_shift_px: params.max_shift_px,
            ..rigid.clone()
        };
        let mut blocks = Vec::new();
        for &y0 in &ys {
            for &x0 in &xs {
                let tb = template.slice(s![y0..y0 + size, x0..x0 + size]).to_owned();
                blocks.push(Block {
                    y0,
                    x0,
                    reg: RigidRegistration::new(tb, block_params.clone())?,
                });
            }
        }
        Ok(PiecewiseRegistration {
            rigid: RigidRegistration::new(template, rigid)?,
            blocks,
            ys,
            xs,
            size,
        })
    }

    /// The rigid stage (shares the template).
    pub fn rigid(&self) -> &RigidRegistration {
        &self.rigid
    }

    /// Rigid shift, then the smoothed residual shift of each block.
    pub fn estimate(&self, frame: ArrayView2<f32>) -> PiecewiseShift {
        let rigid = self.rigid.estimate(frame);
        let moved = shift_frame(frame, rigid.dy, rigid.dx);
        let (ny, nx) = (self.ys.len(), self.xs.len());
        let mut dy = Array2::<f32>::zeros((ny, nx));
        let mut dx = Array2::<f32>::zeros((ny, nx));
        let mut peak = Array2::<f32>::zeros((ny, nx));
        for (i, b) in self.blocks.iter().enumerate() {
            let s = b
                .reg
                .estimate(moved.slice(s![b.y0..b.y0 + self.size, b.x0..b.x0 + self.size]));
            let (r, c) = (i / nx, i % nx);
            dy[[r, c]] = s.dy;
            dx[[r, c]] = s.dx;
            peak[[r, c]] = s.peak.max(0.0);
        }
        // Peak-weighted 3x3 smoothing (the block itself counts double).
        let smooth = |v: &Array2<f32>| {
            Array2::from_shape_fn((ny, nx), |(r, c)| {
                let (mut acc, mut wsum) = (0.0f32, 0.0f32);
                for rr in r.saturating_sub(1)..(r + 2).min(ny) {
                    for cc in c.saturating_sub(1)..(c + 2).min(nx) {
                        let wgt = peak[[rr, cc]] * if (rr, cc) == (r, c) { 2.0 } else { 1.0 };
                        acc += wgt * v[[rr, cc]];
                        wsum += wgt;
                    }
                }
                if wsum > 0.0 { acc / wsum } else { v[[r, c]] }
            })
        };
        PiecewiseShift {
            rigid,
            block_dy: smooth(&dy),
            block_dx: smooth(&dx),
        }
    }

    /// The per-pixel residual field `(Dy, Dx)` interpolated from block centres.
    pub fn field(&self, shift: &PiecewiseShift, h: usize, w: usize) -> (Array2<f32>, Array2<f32>) {
        let centre = |starts: &[usize]| -> Vec<f32> {
            starts
                .iter()
                .map(|&s| s as f32 + self.size as f32 / 2.0 - 0.5)
                .collect()
        };
        let (cy, cx) = (centre(&self.ys), centre(&self.xs));
        let locate = |c: &[f32], v: f32| -> (usize, usize, f32) {
            if c.len() == 1 || v <= c[0] {
                return (0, 0, 0.0);
            }
            let last = c.len() - 1;
            if v >= c[last] {
                return (last, last, 0.0);
            }
            let i = c.partition_point(|&x| x <= v) - 1;
            (i, i + 1, (v - c[i]) / (c[i + 1] - c[i]))
        };
        let mut fy = Array2::<f32>::zeros((h, w));
        let mut fx = Array2::<f32>::zeros((h, w));
        for y in 0..h {
            let (r0, r1, ty) = locate(&cy, y as f32);
            for x in 0..w {
                let (c0, c1, tx) = locate(&cx, x as f32);
                let bil = |a: &Array2<f32>| {
                    let top = a[[r0, c0]] * (1.0 - tx) + a[[r0, c1]] * tx;
                    let bottom = a[[r1, c0]] * (1.0 - tx) + a[[r1, c1]] * tx;
                    top * (1.0 - ty) + bottom * ty
                };
                fy[[y, x]] = bil(&shift.block_dy);
                fx[[y, x]] = bil(&shift.block_dx);
            }
        }
        (fy, fx)
    }

    /// The registered frame: `out(y, x) = frame(y + dy(y, x), x + dx(y, x))` (bilinear), where the
    /// displacement is the rigid shift plus the interpolated block field. Pixels whose source lies
    /// outside the frame take the template's value, as [`super::shift_frame_filled`] does for
    /// rigid registration (content out of view reads as the field's usual brightness, not as a
    /// streak of edge pixels).
    pub fn apply(&self, frame: ArrayView2<f32>, shift: &PiecewiseShift) -> Array2<f32> {
        let (h, w) = frame.dim();
        let (fy, fx) = self.field(shift, h, w);
        let template = self.rigid.template();
        let fill = template.dim() == (h, w);
        let cyc = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        let inside = |v: f32, n: usize| v >= 0.0 && v <= (n - 1) as f32;
        Array2::from_shape_fn((h, w), |(y, x)| {
            let sy = y as f32 + shift.rigid.dy + fy[[y, x]];
            let sx = x as f32 + shift.rigid.dx + fx[[y, x]];
            if fill && !(inside(sy, h) && inside(sx, w)) {
                return template[[y, x]];
            }
            let (iy, ty) = (sy.floor() as isize, sy - sy.floor());
            let (ix, tx) = (sx.floor() as isize, sx - sx.floor());
            let (y0, y1, x0, x1) = (cyc(iy, h), cyc(iy + 1, h), cyc(ix, w), cyc(ix + 1, w));
            let top = frame[[y0, x0]] * (1.0 - tx) + frame[[y0, x1]] * tx;
            let bottom = frame[[y1, x0]] * (1.0 - tx) + frame[[y1, x1]] * tx;
            top * (1.0 - ty) + bottom * ty
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Analytic texture warped by a smooth field (half a sine period across the field, as brain
    /// deformations vary over hundreds of microns): frame(y, x) = T(y - Dy(y, x), x - Dx(y, x)).
    fn warped(
        h: usize,
        w: usize,
        amp: f64,
    ) -> (Array2<f32>, Array2<f32>, Array2<f32>, Array2<f32>) {
        let mut r = Rng::new(4, 0);
        let spots: Vec<(f64, f64, f64)> = (0..1500)
            .map(|_| {
                (
                    r.range(-10.0, h as f64 + 10.0),
                    r.range(-10.0, w as f64 + 10.0),
                    r.range(1.0, 3.0),
                )
            })
            .collect();
        let tex = |y: f64, x: f64| -> f32 {
            (100.0
                + spots
                    .iter()
                    .map(|&(cy, cx, s)| {
                        50.0 * (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * s * s)).exp()
                    })
                    .sum::<f64>()) as f32
        };
        let dyf = |_y: f64, x: f64| amp * (std::f64::consts::PI * x / w as f64).sin();
        let dxf = |y: f64, _x: f64| amp * 0.75 * (std::f64::consts::PI * y / h as f64).cos();
        let template = Array2::from_shape_fn((h, w), |(y, x)| tex(y as f64, x as f64));
        let frame = Array2::from_shape_fn((h, w), |(y, x)| {
            let (yf, xf) = (y as f64, x as f64);
            tex(yf - dyf(yf, xf), xf - dxf(yf, xf))
        });
        let tdy = Array2::from_shape_fn((h, w), |(y, x)| dyf(y as f64, x as f64) as f32);
        let tdx = Array2::from_shape_fn((h, w), |(y, x)| dxf(y as f64, x as f64) as f32);
        (template, frame, tdy, tdx)
    }

    #[test]
    fn block_starts_cover_the_field_with_overlap() {
        assert_eq!(starts(256, 128), vec![0, 64, 128]);
        assert_eq!(starts(300, 128), vec![0, 64, 128, 172]);
        assert_eq!(starts(100, 128), vec![0]);
    }

    #[test]
    fn follows_a_smooth_nonrigid_deformation_better_than_rigid() {
        let (template, frame, tdy, tdx) = warped(192, 192, 2.5);
        let pw = PiecewiseRegistration::new(
            template.clone(),
            RigidParams::default(),
            &PiecewiseParams {
                block_px: 64,
                max_shift_px: 5.0,
            },
        )
        .unwrap();
        let s = pw.estimate(frame.view());
        let (fy, fx) = pw.field(&s, 192, 192);
        // Total estimated displacement against the truth, away from the borders.
        let mut err = 0.0f64;
        let mut n = 0.0;
        for y in (32..160).step_by(8) {
            for x in (32..160).step_by(8) {
                let ey = f64::from(s.rigid.dy + fy[[y, x]] - tdy[[y, x]]);
                let ex = f64::from(s.rigid.dx + fx[[y, x]] - tdx[[y, x]]);
                err += ey * ey + ex * ex;
                n += 1.0;
            }
        }
        let rms = (err / n).sqrt();
        assert!(
            rms < 0.4,
            "rms field error {rms} px (deformation amplitude 2.5 px)"
        );
        let mse = |a: &Array2<f32>| -> f64 {
            a.slice(s![20..172, 20..172])
                .iter()
                .zip(template.slice(s![20..172, 20..172]).iter())
                .map(|(p, q)| f64::from(p - q).powi(2))
                .sum::<f64>()
        };
        let rigid_only = shift_frame(frame.view(), s.rigid.dy, s.rigid.dx);
        let nonrigid = pw.apply(frame.view(), &s);
        assert!(
            mse(&nonrigid) < 0.5 * mse(&rigid_only),
            "piecewise {} vs rigid {}",
            mse(&nonrigid),
            mse(&rigid_only)
        );
    }

    #[test]
    fn pixels_out_of_view_take_the_template() {
        // A rigid shift of 6 px down: the top rows of the registered frame have no source.
        let (template, _, _, _) = warped(128, 128, 0.0);
        let frame =
            Array2::from_shape_fn(
                (128, 128),
                |(y, x)| {
                    if y >= 6 { template[[y - 6, x]] } else { 0.0 }
                },
            );
        let pw = PiecewiseRegistration::new(
            template.clone(),
            RigidParams::default(),
            &PiecewiseParams {
                block_px: 64,
                max_shift_px: 3.0,
            },
        )
        .unwrap();
        let s = pw.estimate(frame.view());
        assert!((s.rigid.dy - 6.0).abs() < 0.3, "{:?}", s.rigid);
        let out = pw.apply(frame.view(), &s);
        // Rows whose source lies below the frame's last row are the template's, exactly.
        for x in [0, 40, 127] {
            assert_eq!(out[[127, x]], template[[127, x]]);
        }
        // Inside, the registered frame matches the template.
        let err: f32 = (10..110)
            .map(|y| (out[[y, 64]] - template[[y, 64]]).abs())
            .fold(0.0, f32::max);
        assert!(err < 5.0, "{err}");
    }

    #[test]
    fn tiny_blocks_are_refused() {
        let t = Array2::<f32>::zeros((64, 64));
        assert!(
            PiecewiseRegistration::new(
                t,
                RigidParams::default(),
                &PiecewiseParams {
                    block_px: 8,
                    max_shift_px: 3.0
                }
            )
            .is_err()
        );
    }
}
