//! One module per kind of task; [`run`] dispatches on the stage's name.

mod denoise;
pub(crate) mod extract;
pub(crate) mod publish;
pub(crate) mod register;
mod summarize;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tessera_io::Output;

use crate::{Done, TaskSpec, WorkerError};

pub(crate) fn run(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    match spec.uses.as_str() {
        "register" => register::run(spec, out, false),
        "register-piecewise" => register::run(spec, out, true),
        "denoise" => denoise::run(spec, out),
        "summarize" => summarize::run(spec, out),
        "detect" => extract::detect(spec, out),
        "demix" => extract::demix(spec, out),
        "demix/merge" => extract::merge(spec, out),
        "qc" => extract::qc(spec, out),
        "deconvolve" => extract::deconvolve(spec, out),
        other => Err(WorkerError::Spec(format!(
            "this worker does not know the stage `{other}`"
        ))),
    }
}

/// The kernel's parameters: `base` with every non-null parameter of the task laid over it
/// (`null` is auto: the base decides), skipping `skip` (parameters the worker resolves itself).
pub(crate) fn params_over<T: Serialize + DeserializeOwned>(
    spec: &TaskSpec,
    base: T,
    skip: &[&str],
) -> Result<T, WorkerError> {
    let mut merged = match serde_json::to_value(base) {
        Ok(Value::Object(m)) => m,
        _ => return Err(WorkerError::Spec("parameters are not an object".into())),
    };
    for (k, v) in &spec.params {
        if !v.is_null() && !skip.contains(&k.as_str()) {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(merged))
        .map_err(|e| WorkerError::Spec(format!("parameters of stage `{}`: {e}", spec.uses)))
}

/// A parameter given explicitly (not null, not absent).
pub(crate) fn given<'a>(spec: &'a TaskSpec, name: &str) -> Option<&'a Value> {
    spec.params.get(name).filter(|v| !v.is_null())
}

/// Bytes a task holds besides its runs of frames: the program, buffers, images and masks of the
/// field, and the components' traces (a few copies of about one trace per `(2r)^2` pixels).
pub fn reserve_bytes(shape: tessera_core::Shape3, radius: f64) -> u64 {
    let pixels = (shape.y * shape.x) as f64;
    let cells = pixels / (4.0 * radius * radius).max(1.0);
    (40.0 * 1024.0 * 1024.0 + pixels * 64.0 + cells * shape.t as f64 * 4.0 * 4.0) as u64
}

/// Frames per run of a streamed pass holding `copies` float32 copies of the run, within the
/// task's memory budget after the reserve.
pub(crate) fn frames_per_run(spec: &TaskSpec, copies: f64) -> u64 {
    let shape = spec.movie.shape;
    let free = spec
        .memory_budget_bytes
        .saturating_sub(reserve_bytes(shape, spec.context.radius_px));
    let frame = (shape.y * shape.x) as f64 * 4.0 * copies;
    ((free as f64 / frame.max(1.0)).floor() as u64).max(1)
}

/// Writes the (y, x) float32 images `images` as the group `group` (`<group>/<name>`).
pub(crate) fn write_images(
    out: &Output,
    group: &str,
    images: impl IntoIterator<Item = (&'static str, ndarray::Array2<f32>)>,
) -> Result<(), WorkerError> {
    out.write_group_at(group, serde_json::Map::new())?;
    for (name, img) in images {
        out.write_array(
            &format!("{group}/{name}"),
            &img.into_dyn(),
            &["y", "x"],
            serde_json::Map::new(),
        )?;
    }
    Ok(())
}

/// How a movie-stage task writes its piece: float32 in the movie's chunks, the movie's metadata
/// with the task named as the source.
pub(crate) fn piece_options(spec: &TaskSpec) -> tessera_io::WriteOptions {
    let mut meta = spec.movie.meta.clone();
    meta.source = Some(format!("tessera task {} ({})", spec.key, spec.uses));
    tessera_io::WriteOptions {
        chunks: spec.movie.chunks,
        overwrite: true,
        meta,
        zstd_level: tessera_io::DERIVED_ZSTD_LEVEL,
        ..tessera_io::WriteOptions::default()
    }
}
