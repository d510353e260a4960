//! Content-addressed task keys: a task's key is the hash of everything that decides its output, so
//! a rerun with the same inputs and workflow finds the same keys (and can reuse committed results),
//! and changing one parameter changes the keys of exactly the tasks whose output it changes: the
//! stage's own tasks and, through their dependencies, every task downstream of them.
//!
//! ```text
//! key = sha256( "tessera-task/1" | stage uses | normalized parameters (JSON, sorted keys)
//!             | input digest | tile spec (index, core box, halo box, frame binning)
//!             | keys of the tasks it depends on, in order )
//! ```
//!
//! The stage's `id` is not part of the key (renaming a stage does not change its output); its
//! `uses` and parameters are.

use sha2::{Digest, Sha256};
use tessera_core::tiling::TilePlan;

use crate::schema::Workflow;

/// Version of the key recipe: bump it when the recipe changes.
const RECIPE: &str = "tessera-task/1";

/// Keys of every task of `plan` (built from `workflow`), per plan stage, in tile order, as lowercase
/// hex. `input_digest` identifies the recording (see the command that computes it).
pub fn task_keys(workflow: &Workflow, plan: &TilePlan, input_digest: &str) -> Vec<Vec<String>> {
    let mut keys: Vec<Vec<String>> = Vec::with_capacity(plan.stages.len());
    for stage_plan in &plan.stages {
        let stage = workflow.stages.iter().find(|s| s.id == stage_plan.name);
        let (uses, params) = match stage {
            Some(s) => (
                s.uses.as_str(),
                serde_json::to_string(&s.with).unwrap_or_default(),
            ),
            None => (stage_plan.name.as_str(), String::new()),
        };
        let previous = keys.last();
        let stage_keys = stage_plan
            .tiles
            .iter()
            .map(|tile| {
                let mut h = Sha256::new();
                for part in [
                    RECIPE,
                    uses,
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
                for &d in &tile.depends_on {
                    let k = previous.and_then(|p| p.get(d)).map_or("", String::as_str);
                    h.update((k.len() as u64).to_le_bytes());
                    h.update(k.as_bytes());
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
