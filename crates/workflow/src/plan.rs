//! From a workflow and a recording's geometry to the tile plan: each tiled stage becomes a
//! [`StageTiling`] (its tiling kind, its memory copies, the workflow's `tile:` overrides) for the
//! core crate's planner, under the workflow's memory budget per task.

use tessera_core::tiling::{PlanInput, StageTiling, TilePlan, TilingKind, plan_tiles};
use tessera_core::{CoreError, Shape3};

use crate::catalog::{DataKind, stage};
use crate::schema::Workflow;

/// Suffix of the task that gathers a spatially tiled ROI stage (`demix`): the merge of ROIs across
/// tile edges and the global refit of every trace and of the background, streamed over the whole
/// recording. Its plan stage is named `<stage id>/merge` (stage ids hold no `/`).
pub const MERGE_SUFFIX: &str = "/merge";

/// Float32 frame copies the merge's streamed refit holds per run of frames.
const MERGE_COPIES: f64 = 2.0;

/// What the planner needs to know of the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingGeometry {
    pub shape: Shape3,
    /// Storage chunk shape `[t, y, x]`.
    pub chunks: [u64; 3],
    /// Pixel size in micrometres, when known (sets the default cell radius).
    pub pixel_size_um: Option<f64>,
}

/// The cell radius the plan's halos follow: the `detect` stage's `radius_px`, else 6 um over the
/// pixel size (the workflow's, else the recording's), else 5 px.
pub fn cell_radius_px(workflow: &Workflow, geometry: &RecordingGeometry) -> f64 {
    workflow
        .stages
        .iter()
        .filter(|s| s.uses == "detect")
        .find_map(|s| s.with.get("radius_px").and_then(|v| v.as_f64()))
        .or_else(|| {
            workflow
                .input
                .pixel_size_um
                .or(geometry.pixel_size_um)
                .filter(|p| *p > 0.0)
                .map(|p| 6.0 / p)
        })
        .unwrap_or(5.0)
}

/// Tiles of every stage, in workflow order, with a `<id>/merge` stage after each spatially tiled
/// stage that produces ROIs (see [`MERGE_SUFFIX`]). An
/// override of `memory_budget_bytes` replaces the workflow's `resources.memory_per_task`, and
/// `tile_px` every spatial stage's `tile.size_px` (`tessera plan --tile-size`).
pub fn plan(
    workflow: &Workflow,
    geometry: &RecordingGeometry,
    memory_budget_bytes: Option<u64>,
    tile_px: Option<u64>,
) -> Result<TilePlan, CoreError> {
    let mut stages = Vec::new();
    for s in &workflow.stages {
        let Some(spec) = stage(&s.uses) else {
            continue;
        };
        let Some(kind) = spec.tiling else {
            continue;
        };
        let mut t = StageTiling::new(&s.id, kind, spec.copies);
        t.tile_px = tile_px.or(s.tile.size_px);
        t.tile_frames = s.tile.frames;
        t.halo_px = s.tile.halo_px;
        stages.push(t);
        if kind == TilingKind::Spatial && spec.produces.contains(&DataKind::Rois) {
            stages.push(StageTiling::new(
                &format!("{}{MERGE_SUFFIX}", s.id),
                TilingKind::Whole,
                MERGE_COPIES,
            ));
        }
    }
    plan_tiles(&PlanInput {
        shape: geometry.shape,
        chunks: geometry.chunks,
        cell_radius_px: cell_radius_px(workflow, geometry),
        memory_budget_bytes: memory_budget_bytes
            .unwrap_or(workflow.resources.memory_per_task_bytes),
        stages,
    })
}
