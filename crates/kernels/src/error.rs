use thiserror::Error;

/// Errors of the numerical kernels.
#[derive(Debug, Error)]
pub enum KernelError {
    /// A parameter outside its valid range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    /// Input arrays whose shapes do not fit together or are too small for the method.
    #[error("bad input shape: {0}")]
    Shape(String),
    /// A NaN or infinite sample in a movie (frame and pixel of the first one).
    #[error("non-finite sample at frame {frame}, pixel (y {y}, x {x})")]
    NonFinite { frame: usize, y: usize, x: usize },
}
