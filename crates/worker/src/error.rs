//! The worker's error: what went wrong in a task, and whether running it again could help.

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Reading or writing a store failed (a lost mount, a network error, a full disk): worth
    /// retrying elsewhere.
    #[error(transparent)]
    Io(#[from] tessera_io::IoError),
    /// The data cannot be processed as asked (a non-finite sample, a recording too short for the
    /// method, a parameter out of range): retrying gives the same answer.
    #[error("{0}")]
    Data(String),
    /// A numerical kernel refused its input.
    #[error(transparent)]
    Kernel(#[from] tessera_kernels::KernelError),
    /// The task's specification does not make sense (unknown stage, wrong parameter type, inputs
    /// missing): a bug or a mismatched coordinator.
    #[error("bad task specification: {0}")]
    Spec(String),
    /// The task panicked: a bug in tessera, not in the data (please report it with the task's
    /// specification).
    #[error("internal error in the task (a bug; please report it): {0}")]
    Internal(String),
}

impl WorkerError {
    /// Whether another attempt could succeed: store failures yes; a chunk that does not decode,
    /// a read-only or incomplete store, and everything about the data or the specification no.
    pub fn is_retryable(&self) -> bool {
        use tessera_io::IoError as E;
        match self {
            WorkerError::Io(e) => matches!(
                e,
                E::Store { .. } | E::Read { .. } | E::Write { .. } | E::File { .. }
            ),
            _ => false,
        }
    }
}

impl From<tessera_core::CoreError> for WorkerError {
    fn from(e: tessera_core::CoreError) -> Self {
        WorkerError::Spec(e.to_string())
    }
}

impl From<ndarray::ShapeError> for WorkerError {
    fn from(e: ndarray::ShapeError) -> Self {
        WorkerError::Spec(format!("array shape: {e}"))
    }
}

impl From<tessera_nwb::NwbError> for WorkerError {
    fn from(e: tessera_nwb::NwbError) -> Self {
        use tessera_nwb::NwbError as N;
        match e {
            N::Io(e) => WorkerError::Io(e),
            // Writing the HDF5 file failed (a full disk, a lost mount): worth another attempt.
            N::Hdf5 { path, reason } => WorkerError::Io(tessera_io::IoError::Write {
                location: path,
                what: "the NWB file".into(),
                reason,
            }),
            other => WorkerError::Data(other.to_string()),
        }
    }
}
