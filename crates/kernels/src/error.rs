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
}
