//! tessera-workflow: the pipeline as data. A YAML workflow names the recording, the stages to run
//! (`uses:` a stage of the catalogue, `with:` its parameters, `tile:` planner overrides), where
//! results go and what each task may use:
//!
//! ```yaml
//! apiVersion: tessera/v1
//! kind: Workflow
//! input: {frame_rate_hz: 30}
//! stages:
//!   - uses: register
//!   - uses: detect
//!     with: {radius_px: 6}
//!   - uses: demix
//!   - uses: qc
//!   - uses: deconvolve
//! resources: {memory_per_task: 2GiB}
//! ```
//!
//! [`parse`] checks every key and value against the schema and the [`catalog`] and every stage
//! order against the stage graph ([`DataKind`]s consumed and produced), and reports every problem
//! with its line and column, suggesting the nearest valid key or stage for a typo. The result is a
//! [`Workflow`] with every default filled in (its [`Workflow::normalized`] JSON says exactly how a
//! run is made). [`plan()`] turns it into the tile plan for a recording.

pub mod catalog;
mod error;
mod graph;
pub mod keys;
mod parse;
pub mod plan;
pub mod schema;
pub mod tasks;

pub use catalog::{DataKind, ParamSpec, ParamType, StageSpec, catalog, stage};
pub use error::{Diagnostic, WorkflowError};
pub use keys::task_keys;
pub use parse::parse_bytes;
pub use plan::{RecordingGeometry, cell_radius_px, plan};
pub use schema::{Input, Outputs, Resources, Stage, TileSettings, Workflow};
pub use tasks::{RunOptions, RunTasks, run_tasks};
pub use tessera_core::task::{PUBLISH, RecordingInput};

/// Parses and validates a workflow; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Workflow, WorkflowError> {
    let invalid = |diagnostics| WorkflowError::Invalid {
        file: file.to_string(),
        diagnostics,
    };
    let (workflow, placed) = parse::parse(text).map_err(invalid)?;
    let diagnostics = graph::check(&workflow.stages, &placed);
    if diagnostics.is_empty() {
        Ok(workflow)
    } else {
        Err(invalid(diagnostics))
    }
}

/// Reads and validates a workflow file.
pub fn load(path: &std::path::Path) -> Result<Workflow, WorkflowError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkflowError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

#[cfg(test)]
mod tests;
