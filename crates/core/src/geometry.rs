use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The extent of a recording: frames (t), rows (y) and columns (x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape3 {
    pub t: u64,
    pub y: u64,
    pub x: u64,
}

impl Shape3 {
    /// A shape with every extent non-zero.
    pub fn new(t: u64, y: u64, x: u64) -> Result<Self, CoreError> {
        let s = Shape3 { t, y, x };
        if t == 0 || y == 0 || x == 0 {
            return Err(CoreError::EmptyShape(s.to_string()));
        }
        Ok(s)
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.t * self.y * self.x
    }

    /// True when any extent is zero (never for shapes built with [`Shape3::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels per frame.
    pub fn frame_len(&self) -> u64 {
        self.y * self.x
    }

    /// The whole recording as a box.
    pub fn full_box(&self) -> Box3 {
        Box3 {
            t: 0..self.t,
            y: 0..self.y,
            x: 0..self.x,
        }
    }

    /// As an array `[t, y, x]`.
    pub fn to_array(&self) -> [u64; 3] {
        [self.t, self.y, self.x]
    }
}

impl fmt::Display for Shape3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(t={}, y={}, x={})", self.t, self.y, self.x)
    }
}

/// A half-open box `[t0, t1) x [y0, y1) x [x0, x1)` inside a recording.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Box3 {
    pub t: Range<u64>,
    pub y: Range<u64>,
    pub x: Range<u64>,
}

impl Box3 {
    /// A non-empty box that lies inside `shape`.
    pub fn within(
        shape: &Shape3,
        t: Range<u64>,
        y: Range<u64>,
        x: Range<u64>,
    ) -> Result<Self, CoreError> {
        let b = Box3 { t, y, x };
        let fits = |r: &Range<u64>, n: u64| r.start < r.end && r.end <= n;
        if !(fits(&b.t, shape.t) && fits(&b.y, shape.y) && fits(&b.x, shape.x)) {
            return Err(CoreError::BoxOutOfBounds {
                requested: b.to_string(),
                shape: shape.to_string(),
            });
        }
        Ok(b)
    }

    /// The box's extent.
    pub fn shape(&self) -> [usize; 3] {
        [
            (self.t.end - self.t.start) as usize,
            (self.y.end - self.y.start) as usize,
            (self.x.end - self.x.start) as usize,
        ]
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.shape().iter().map(|&n| n as u64).product()
    }

    /// True when the box holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start corner `[t0, y0, x0]`.
    pub fn start(&self) -> [u64; 3] {
        [self.t.start, self.y.start, self.x.start]
    }

    /// The three ranges in `t, y, x` order.
    pub fn ranges(&self) -> [Range<u64>; 3] {
        [self.t.clone(), self.y.clone(), self.x.clone()]
    }
}

impl fmt::Display for Box3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[t {}..{}, y {}..{}, x {}..{}]",
            self.t.start, self.t.end, self.y.start, self.y.end, self.x.start, self.x.end
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_bounds_are_checked() {
        let s = Shape3::new(10, 20, 30).unwrap();
        assert!(Box3::within(&s, 0..10, 0..20, 0..30).is_ok());
        assert!(Box3::within(&s, 0..11, 0..20, 0..30).is_err());
        assert!(Box3::within(&s, 5..5, 0..20, 0..30).is_err());
        let b = Box3::within(&s, 2..4, 3..7, 0..1).unwrap();
        assert_eq!(b.shape(), [2, 4, 1]);
        assert_eq!(b.len(), 8);
        assert!(Shape3::new(0, 1, 1).is_err());
    }
}
