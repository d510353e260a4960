//! A small RGB raster and the few drawing operations the report's figures need (images, ROI
//! outlines, grid lines, polylines, bars), encoded as PNG. No fonts: the labels are in the HTML.

use std::io::Cursor;

/// An RGB image, row-major.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<[u8; 3]>,
}

pub const WHITE: [u8; 3] = [255, 255, 255];
pub const GREY: [u8; 3] = [200, 200, 200];
pub const GREEN: [u8; 3] = [40, 200, 80];
pub const RED: [u8; 3] = [230, 60, 50];
pub const BLUE: [u8; 3] = [40, 90, 200];
pub const ORANGE: [u8; 3] = [240, 150, 30];
pub const CYAN: [u8; 3] = [60, 200, 230];
pub const BLACK: [u8; 3] = [20, 20, 20];
pub const YELLOW: [u8; 3] = [250, 220, 40];
pub const MAGENTA: [u8; 3] = [230, 50, 220];

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    pub fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = c;
        }
    }

    /// An image scaled by `scale` (nearest neighbour), grey levels from its 1st to 99.5th
    /// percentile; non-finite pixels black.
    pub fn from_image(image: &ndarray::Array2<f32>, scale: usize) -> Canvas {
        let (h, w) = image.dim();
        let mut finite: Vec<f32> = image.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f32::total_cmp);
        let at = |q: f64| -> f32 {
            if finite.is_empty() {
                0.0
            } else {
                finite[((finite.len() - 1) as f64 * q).round() as usize]
            }
        };
        let (lo, hi) = (at(0.01), at(0.995));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut c = Canvas::new(w * scale, h * scale, BLACK);
        for ((y, x), &v) in image.indexed_iter() {
            let g = if v.is_finite() {
                (((v - lo) / span).clamp(0.0, 1.0) * 255.0) as u8
            } else {
                0
            };
            for dy in 0..scale {
                for dx in 0..scale {
                    c.set((x * scale + dx) as i64, (y * scale + dy) as i64, [g, g, g]);
                }
            }
        }
        c
    }

    /// A line from (x0, y0) to (x1, y1) (Bresenham).
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled rectangle, clipped.
    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.min(y1)..y0.max(y1) {
            for x in x0.min(x1)..x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// The outline of a set of pixels (`mask[y][x]` over an image of `w` x `h` drawn at
    /// `scale`): every mask pixel with a neighbour outside the mask.
    pub fn outline(&mut self, mask: &[bool], w: usize, h: usize, scale: usize, c: [u8; 3]) {
        let inside = |x: i64, y: i64| {
            x >= 0
                && y >= 0
                && (x as usize) < w
                && (y as usize) < h
                && mask[y as usize * w + x as usize]
        };
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                if inside(x, y)
                    && !(inside(x - 1, y)
                        && inside(x + 1, y)
                        && inside(x, y - 1)
                        && inside(x, y + 1))
                {
                    let s = scale as i64;
                    self.rect(x * s, y * s, x * s + s, y * s + s, c);
                }
            }
        }
    }

    /// A polyline of `values` over the box (x0, y0)-(x1, y1), scaled to [lo, hi] (NaN gaps).
    #[allow(clippy::too_many_arguments)]
    pub fn trace(
        &mut self,
        values: &[f32],
        x0: i64,
        y0: i64,
        x1: i64,
        y1: i64,
        lo: f32,
        hi: f32,
        c: [u8; 3],
    ) {
        let n = values.len();
        if n == 0 {
            return;
        }
        let span = if hi > lo { hi - lo } else { 1.0 };
        let px = |i: usize| x0 + ((x1 - x0) as f64 * i as f64 / (n.max(2) - 1) as f64) as i64;
        let py = |v: f32| y1 - (((v - lo) / span).clamp(0.0, 1.0) * (y1 - y0) as f32) as i64;
        let mut last: Option<(i64, i64)> = None;
        for (i, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                last = None;
                continue;
            }
            let p = (px(i), py(v));
            if let Some(q) = last {
                self.line(q.0, q.1, p.0, p.1, c);
            } else {
                self.set(p.0, p.1, c);
            }
            last = Some(p);
        }
    }

    /// PNG bytes (8-bit RGB).
    pub fn png(&self) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut e = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            e.set_color(png::ColorType::Rgb);
            e.set_depth(png::BitDepth::Eight);
            let data: Vec<u8> = self.pixels.iter().flatten().copied().collect();
            // Writing to memory cannot fail but for a zero-sized image, which the caller avoids.
            if let Ok(mut w) = e.write_header() {
                let _ = w.write_image_data(&data);
            }
        }
        out.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_both_ends_and_outlines_skip_the_interior() {
        let mut c = Canvas::new(10, 10, BLACK);
        c.line(0, 0, 9, 4, WHITE);
        assert_eq!(c.pixels[0], WHITE);
        assert_eq!(c.pixels[4 * 10 + 9], WHITE);
        let mut mask = vec![false; 25];
        for y in 1..4 {
            for x in 1..4 {
                mask[y * 5 + x] = true;
            }
        }
        let mut c = Canvas::new(5, 5, BLACK);
        c.outline(&mask, 5, 5, 1, GREEN);
        assert_eq!(c.pixels[5 + 1], GREEN);
        assert_eq!(c.pixels[2 * 5 + 2], BLACK, "the interior is not outlined");
        assert_eq!(c.pixels[0], BLACK);
    }

    #[test]
    fn png_has_the_signature_and_size() {
        let bytes = Canvas::new(7, 3, RED).png();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]),
            7
        );
        assert_eq!(
            u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
            3
        );
    }
}
