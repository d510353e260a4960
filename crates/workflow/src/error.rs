use std::fmt;

use thiserror::Error;

/// One problem in a workflow file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Errors of the workflow crate.
#[derive(Debug, Error)]
pub enum WorkflowError {
    /// The file could not be read.
    #[error("failed to read workflow {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid workflow: every problem found, in file order.
    #[error("{}", render(file, diagnostics))]
    Invalid {
        file: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// The workflow is valid but cannot be planned on this recording.
    #[error("cannot plan workflow {file}: {source}")]
    Plan {
        file: String,
        #[source]
        source: tessera_core::CoreError,
    },
}

fn render(file: &str, diagnostics: &[Diagnostic]) -> String {
    let mut out = format!(
        "{file}: {} problem{}",
        diagnostics.len(),
        if diagnostics.len() == 1 { "" } else { "s" }
    );
    for d in diagnostics {
        out.push_str(&format!("\n{file}:{d}"));
    }
    out
}
