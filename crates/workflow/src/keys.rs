//! Content-addressed task keys: a task's key is the hash of everything that decides its output, so
//! a rerun with the same inputs and workflow finds the same keys (and can reuse committed results),
//! and changing one parameter changes the keys of exactly the tasks whose output it changes: the
//! stage's own tasks and, through their dependencies, every task downstream of them.
//!
//! ```text
//! key = sha256( "tessera-task/1" | stage uses | normalized parameters (JSON, sorted keys)
//!             | input digest | tile spec (index, core box, halo box, frame binning)
//!             | keys of the tasks whose data it reads, in stage and tile order )
//! ```
//!
//! The stage's `id` is not part of the key (renaming a stage does not change its output); its
//! `uses` and parameters are.

use sha2::{Digest, Sha256};
use tessera_core::Box3;
use tessera_core::tiling::TilePlan;

use crate::catalog::DataKind;

use crate::plan::MERGE_SUFFIX;
use crate::schema::{Stage, Workflow};

/// Version of the key recipe: bump it when the recipe changes.
const RECIPE: &str = "tessera-task/2";

/// What a plan stage consumes and produces: its catalogue stage's kinds (a merge task takes and
/// gives its stage's ROIs and traces).
pub fn kinds(workflow: &Workflow, plan_stage: &str) -> (&'static [DataKind], &'static [DataKind]) {
    let (id, merge) = match plan_stage.strip_suffix(MERGE_SUFFIX) {
        Some(id) => (id, true),
        None => (plan_stage, false),
    };
    let spec = workflow
        .stages
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| crate::catalog::stage(&s.uses));
    match spec {
        Some(spec) if merge => (spec.produces, spec.produces),
        Some(spec) => (spec.consumes, spec.produces),
        None => (&[], &[]),
    }
}

/// The workflow stage a plan stage runs and what it `uses` (`<uses>/merge` for a merge stage).
pub fn stage_of<'a>(workflow: &'a Workflow, plan_stage: &str) -> Option<(String, &'a Stage)> {
    let (id, suffix) = match plan_stage.strip_suffix(MERGE_SUFFIX) {
        Some(id) => (id, MERGE_SUFFIX),
        None => (plan_stage, ""),
    };
    let stage = workflow.stages.iter().find(|s| s.id == id)?;
    Some((format!("{}{suffix}", stage.uses), stage))
}

/// The plan stages whose data plan stage `si` reads: for each kind it consumes, the latest
/// earlier stage producing it (none for the recording itself), in stage order.
pub fn sources(workflow: &Workflow, plan: &TilePlan, si: usize) -> Vec<usize> {
    let (consumes, _) = kinds(workflow, &plan.stages[si].name);
    let mut sources: Vec<usize> = consumes
        .iter()
        .filter_map(|k| {
            (0..si)
                .rev()
                .find(|&j| kinds(workflow, &plan.stages[j].name).1.contains(k))
        })
        .collect();
    sources.sort_unstable();
    sources.dedup();
    sources
}

/// Whether two boxes overlap.
pub fn meets(a: &Box3, b: &Box3) -> bool {
    let m = |a: &std::ops::Range<u64>, b: &std::ops::Range<u64>| a.start < b.end && b.start < a.end;
    m(&a.t, &b.t) && m(&a.y, &b.y) && m(&a.x, &b.x)
}

/// Keys of every task of `plan` (built from `workflow`), per plan stage, in tile order, as lowercase
/// hex. `input_digest` identifies the recording (see the command that computes it).
///
/// A task's key covers the keys of the tasks whose data it reads: for each kind it consumes, the
/// tiles of the latest earlier stage producing that kind whose cores meet its halo (the recording
/// itself, for a movie no stage produced, enters through `input_digest`). So a stage's
/// parameters reach only the stages downstream in the data flow: changing QC thresholds does not
/// change the spike inference's key, which reads the traces, not the QC.
pub fn task_keys(workflow: &Workflow, plan: &TilePlan, input_digest: &str) -> Vec<Vec<String>> {
    let mut keys: Vec<Vec<String>> = Vec::with_capacity(plan.stages.len());
    for (si, stage_plan) in plan.stages.iter().enumerate() {
        // A merge task hashes as its stage's `uses` plus the suffix, with the stage's parameters.
        let (uses, params) = match stage_of(workflow, &stage_plan.name) {
            Some((uses, s)) => (uses, serde_json::to_string(&s.with).unwrap_or_default()),
            None => (stage_plan.name.clone(), String::new()),
        };
        let sources = sources(workflow, plan, si);
        let stage_keys = stage_plan
            .tiles
            .iter()
            .map(|tile| {
                let mut h = Sha256::new();
                for part in [
                    RECIPE,
                    &uses,
                    &params,
                    input_digest,
                    &format!(
                        "{} {} {} {}",
                        tile.index, tile.core, tile.halo, stage_plan.bin_frames
                    ),
                ] {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part.as_bytes());
                }
                for &j in &sources {
                    for (d, k) in plan.stages[j].tiles.iter().zip(&keys[j]) {
                        if meets(&d.core, &tile.halo) {
                            h.update((k.len() as u64).to_le_bytes());
                            h.update(k.as_bytes());
                        }
                    }
                }
                hex(&h.finalize())
            })
            .collect();
        keys.push(stage_keys);
    }
    keys
}

/// SHA-256 of `bytes` as lowercase hex (the digest task keys and input digests use).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
