//! `tessera validate`, `tessera stages` and `tessera plan`: the workflow as data, checked before any
//! work starts.

use std::path::PathBuf;

use anyhow::Context;
use tessera_workflow::{ParamType, RecordingGeometry, catalog, cell_radius_px};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow YAML files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print each normalized workflow (every default explicit) as JSON.
    #[arg(long)]
    pub normalized: bool,
}

/// Validates each file; prints its stage chain, or every problem with file, line and column.
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for file in &args.files {
        match tessera_workflow::load(file) {
            Ok(w) => {
                println!(
                    "{}: valid workflow, {} stage(s): {}",
                    file.display(),
                    w.stages.len(),
                    w.chain()
                );
                if args.normalized {
                    println!("{}", serde_json::to_string_pretty(&w.normalized())?);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} workflow(s) invalid", args.files.len());
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct StagesArgs {
    /// Print the catalogue as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists every stage with what it consumes and produces and its parameters.
pub fn stages(args: StagesArgs) -> anyhow::Result<()> {
    let all = catalog();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for s in &all {
        let kinds = |k: &[tessera_workflow::DataKind]| {
            k.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
        };
        let tiling = s.tiling.map_or("not tiled".to_string(), |t| {
            format!("{t:?} tiles").to_lowercase()
        });
        println!("{}: {}", s.name, s.summary);
        println!(
            "  consumes {}; produces {}; {tiling}",
            kinds(s.consumes),
            kinds(s.produces)
        );
        for p in &s.params {
            let default = match (&p.default, &p.ty) {
                (serde_json::Value::Null, ParamType::Auto { .. }) => "auto".to_string(),
                (v, _) => v.to_string().trim_matches('"').to_string(),
            };
            println!(
                "  {:<22} {:<34} default {:<8} {}",
                p.name,
                p.ty.describe(),
                default,
                p.doc
            );
        }
        println!();
    }
    Ok(())
}

/// The recording a workflow is planned on, and the planner's overrides (`plan` and `run`).
#[derive(Debug, clap::Args)]
pub struct PlanOptions {
    /// The recording (path or URI) instead of the workflow's input.uri.
    #[arg(long)]
    pub input: Option<String>,
    /// Array path inside the input store instead of the workflow's input.array.
    #[arg(long)]
    pub array: Option<String>,
    /// Memory per task instead of the workflow's resources.memory_per_task (e.g. 2GiB).
    #[arg(long, value_parser = crate::transform::parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Core edge (px) of every spatial stage's tiles instead of the workflow's or the planner's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..))]
    pub tile_size: Option<u64>,
}

impl PlanOptions {
    /// The recording to work on (`--input`, else the workflow's input.uri) and its location.
    pub fn open(
        &self,
        w: &tessera_workflow::Workflow,
        file: &std::path::Path,
    ) -> anyhow::Result<(String, tessera_io::Recording)> {
        let uri = self
            .input
            .clone()
            .or_else(|| w.input.uri.clone())
            .with_context(|| {
                format!(
                    "no recording given: pass --input URI or set input.uri in {}",
                    file.display()
                )
            })?;
        let array = self.array.as_deref().or(w.input.array.as_deref());
        let rec = tessera_io::Recording::open(&uri, array)
            .with_context(|| format!("failed to open recording {uri}"))?;
        Ok((uri, rec))
    }
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Workflow YAML file.
    pub file: PathBuf,
    #[command(flatten)]
    pub on: PlanOptions,
    /// Print the whole plan (every tile, its boxes, memory and dependencies) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the tile plan of a workflow on a recording: per stage the tile count, tile and halo
/// size, frames per task, peak memory per task and dependencies.
pub fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let w = tessera_workflow::load(&args.file)?;
    let (uri, rec) = args.on.open(&w, &args.file)?;
    let geometry = RecordingGeometry {
        shape: rec.shape(),
        chunks: rec.chunks(),
        pixel_size_um: rec.meta().pixel_size_um,
    };
    let plan = tessera_workflow::plan(&w, &geometry, args.on.memory_budget, args.on.tile_size)
        .with_context(|| format!("cannot plan {} on {uri}", args.file.display()))?;
    let digest = input_digest(&rec);
    let keys = tessera_workflow::task_keys(&w, &plan, &digest);
    if args.json {
        let out = serde_json::json!({"input_digest": digest, "plan": plan, "task_keys": keys});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = geometry.shape;
    let budget = args
        .on
        .memory_budget
        .unwrap_or(w.resources.memory_per_task_bytes);
    println!(
        "{}: {} stage(s) on {uri} ({}x{}x{}, chunks {:?}); cell radius {:.1} px; {:.0} MB per task",
        args.file.display(),
        w.stages.len(),
        s.t,
        s.y,
        s.x,
        geometry.chunks,
        cell_radius_px(&w, &geometry),
        budget as f64 / 1e6
    );
    for st in &plan.stages {
        let peak = st.tiles.iter().map(|t| t.memory_bytes).max().unwrap_or(0);
        let edge = st
            .tiles
            .iter()
            .map(|t| (t.core.y.end - t.core.y.start).max(t.core.x.end - t.core.x.start))
            .max()
            .unwrap_or(0);
        let frames = st
            .tiles
            .iter()
            .map(|t| t.core.t.end - t.core.t.start)
            .max()
            .unwrap_or(0);
        let deps: Vec<usize> = st.tiles.iter().map(|t| t.depends_on.len()).collect();
        let max_deps = deps.iter().copied().max().unwrap_or(0);
        println!(
            "  {:<20} {:<15} {:>5} tasks  core <= {edge} px x {frames} frames  halo {} px{}  peak {:.0} MB/task  waits for <= {max_deps} task(s) of the previous stage",
            st.name,
            format!("{:?}", st.kind).to_lowercase(),
            st.tiles.len(),
            st.halo_px,
            if st.bin_frames > 1 {
                format!("  bin {}", st.bin_frames)
            } else {
                String::new()
            },
            peak as f64 / 1e6,
        );
    }
    println!(
        "  {} tasks in all; input digest {} (task keys: --json)",
        plan.task_count(),
        &digest[..16]
    );
    Ok(())
}

/// Identity of a recording for task keys: SHA-256 of its array's description (shape, dtype,
/// chunks, codecs and attributes) as JSON. It names the recording's layout and metadata, not its
/// pixels; content digests of inputs and outputs belong to the per-task provenance records.
pub(crate) fn input_digest(rec: &tessera_io::Recording) -> String {
    let s = rec.shape();
    let description = serde_json::json!({
        "shape": [s.t, s.y, s.x],
        "dtype": format!("{:?}", rec.dtype()),
        "chunks": rec.chunks(),
        "codecs": rec.codecs(),
        "attributes": rec.attributes(),
    });
    tessera_workflow::keys::sha256_hex(description.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};
    use tessera_kernels::deconv::OasisParams;
    use tessera_kernels::denoise::DenoiseParams;
    use tessera_kernels::extract::{CnmfParams, DetectParams, QcParams};
    use tessera_kernels::register::{PiecewiseParams, RigidParams};

    /// The catalogue's defaults of `stage`, without `auto` ones and without `skip` (parameters the
    /// command line resolves, not the kernels).
    fn defaults(stage: &str, skip: &[&str]) -> Map<String, Value> {
        tessera_workflow::stage(stage)
            .unwrap()
            .params
            .into_iter()
            .filter(|p| !p.default.is_null() && !skip.contains(&p.name))
            .map(|p| (p.name.to_string(), p.default))
            .collect()
    }

    /// Each default of the catalogue deserializes into the kernel's parameters (no unknown names)
    /// and equals the kernel's own default.
    fn same<T>(stage: &str, skip: &[&str])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Default,
    {
        let ours = defaults(stage, skip);
        let parsed: T = serde_json::from_value(Value::Object(ours.clone())).unwrap_or_else(|e| {
            panic!("{stage}: catalogue parameters do not fit the kernel's: {e}")
        });
        let kernel = serde_json::to_value(T::default()).unwrap();
        let back = serde_json::to_value(parsed).unwrap();
        for (name, v) in &ours {
            let k = &kernel[name];
            let close = match (v.as_f64(), k.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                _ => v == k,
            };
            assert!(close, "{stage}.{name}: catalogue {v}, kernel default {k}");
            assert_eq!(&back[name], k, "{stage}.{name} did not round-trip");
        }
    }

    #[test]
    fn catalogue_defaults_are_the_kernels_defaults() {
        same::<RigidParams>("register", &[]);
        same::<PiecewiseParams>("register-piecewise", &[]);
        same::<DenoiseParams>("denoise", &[]);
        // min_in_view is the extract command's (it reads the registration's shifts).
        same::<DetectParams>("detect", &["min_in_view"]);
        assert_eq!(
            tessera_workflow::stage("detect")
                .unwrap()
                .param("min_in_view")
                .unwrap()
                .default,
            serde_json::json!(tessera_kernels::register::DEFAULT_MIN_IN_VIEW)
        );
        same::<CnmfParams>("demix", &[]);
        same::<QcParams>("qc", &[]);
        // The kernel's OASIS defaults to AR(1); the command line and the catalogue to AR(2)
        // (closer spike rates on the CASCADE recordings, docs/ACCURACY.md).
        same::<OasisParams>("deconvolve", &["order"]);
        assert_eq!(
            tessera_workflow::stage("deconvolve")
                .unwrap()
                .param("order")
                .unwrap()
                .default,
            serde_json::json!(crate::extract::DEFAULT_AR_ORDER)
        );
    }
}
