//! Denoising tasks: each denoises its block of frames x pixels read with its halo (local low-rank,
//! [`tessera_kernels::denoise::denoise`]) and keeps the core, so neighbouring blocks' seams fall in
//! halos that the kernel's own overlapping blocks already smooth.

use ndarray::s;
use serde_json::json;
use tessera_core::Shape3;
use tessera_io::{Output, RecordingWriter};
use tessera_kernels::denoise::{DenoiseParams, denoise};

use super::{params_over, piece_options};
use crate::{Done, MovieReader, TaskSpec, WorkerError};

pub(super) fn run(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let p: DenoiseParams = params_over(spec, DenoiseParams::default(), &[])?;
    let (core, halo) = (&spec.tile.core, &spec.tile.halo);
    let block = reader.read(halo)?;
    let done = denoise(block.view(), &p).map_err(|e| {
        WorkerError::Data(format!(
            "cannot denoise block {halo} of {}: {e}",
            spec.movie
                .pieces
                .first()
                .map_or("the movie", |p| p.uri.as_str())
        ))
    })?;
    drop(block);
    let o = |c: u64, h: u64| (c - h) as usize;
    let kept = done.movie.slice(s![
        o(core.t.start, halo.t.start)..o(core.t.end, halo.t.start),
        o(core.y.start, halo.y.start)..o(core.y.end, halo.y.start),
        o(core.x.start, halo.x.start)..o(core.x.end, halo.x.start)
    ]);
    let [t, y, x] = core.shape();
    let options = piece_options(spec);
    let mut writer =
        RecordingWriter::<f32>::create(out, Shape3::new(t as u64, y as u64, x as u64)?, &options)?;
    writer.append(kept)?;
    writer.finish()?;
    let r = &done.report;
    let figures = json!({"noise_before": r.noise_before, "noise_after": r.noise_after,
        "compression_ratio": r.compression_ratio, "rank_limited_blocks": r.rank_limited_blocks,
        "blocks": r.ranks.len(),
        "mean_rank": r.ranks.iter().sum::<usize>() as f64 / r.ranks.len().max(1) as f64});
    let mut attrs = serde_json::Map::new();
    attrs.insert("report".into(), figures.clone());
    out.write_group_at("denoise", attrs)?;
    Ok(Done {
        figures,
        publishes: Vec::new(),
    })
}
