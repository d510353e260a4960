//! `tessera denoise`: local low-rank (PMD-style) denoising of a recording, one run of frames at a
//! time (see `tessera_kernels::denoise` for the method).
//!
//! The recording is cut in time into segments of `--chunk-frames` frames (aligned to the storage
//! chunks; a short remainder joins the last segment), and each segment is denoised on its own, so
//! memory stays bounded however long the recording is. Each segment keeps its own per-pixel mean.
//!
//! Output group:
//! ```text
//! <out>/movie                 denoised (t, y, x) float32, the input's chunking and metadata
//! <out>/denoise/ranks         (segment, block_y, block_x) uint16: components kept per block
//! <out>/denoise               attributes: per segment frames, noise before/after, compression
//!                             ratio, rank-limited blocks and the null's roughness thresholds
//! <out>/registration/shifts   copied from a registered input (so `extract` still knows which
//!                             pixels were in view)
//! ```

use anyhow::Context;
use ndarray::{Array3, Axis};
use serde_json::json;
use tessera_core::Box3;
use tessera_io::{RecordingWriter, WriteOptions};
use tessera_kernels::denoise::{DenoiseParams, MIN_FRAMES, denoise};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub io: crate::transform::Transform,
    /// Edge of the overlapping square blocks, in pixels.
    #[arg(long, default_value_t = DenoiseParams::default().block_px)]
    pub block_px: usize,
    /// Most components kept per block.
    #[arg(long, default_value_t = DenoiseParams::default().max_rank)]
    pub max_rank: usize,
    /// Keep a component when it is smoother (in time or in space) than this fraction of pure-noise
    /// components.
    #[arg(long, default_value_t = DenoiseParams::default().confidence)]
    pub confidence: f64,
    /// Frames denoised together (default: as many as fill 1 GiB as float32; at least 500).
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..))]
    pub chunk_frames: Option<u64>,
}

/// Segments `[start, end)` of `t` frames: `len` frames each (rounded up to a multiple of the
/// storage chunk `ct`), the remainder joining the last segment when shorter than half a segment or
/// than the kernel's minimum.
fn segments(t: u64, len: u64, ct: u64) -> Vec<(u64, u64)> {
    let len = len.div_ceil(ct.max(1)).max(1) * ct.max(1);
    let mut out: Vec<(u64, u64)> = (0..t.div_ceil(len))
        .map(|i| (i * len, ((i + 1) * len).min(t)))
        .collect();
    if out.len() > 1 {
        let last = out[out.len() - 1];
        if last.1 - last.0 < (len / 2).max(MIN_FRAMES as u64) {
            out.pop();
            if let Some(prev) = out.last_mut() {
                prev.1 = last.1;
            }
        }
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = crate::provenance::Started::now();
    let rec = args.io.open_input()?;
    let shape = rec.shape();
    let params = DenoiseParams {
        block_px: args.block_px,
        max_rank: args.max_rank,
        confidence: args.confidence,
        ..DenoiseParams::default()
    };
    if shape.t < MIN_FRAMES as u64 {
        anyhow::bail!(
            "{} has {} frames; denoising needs at least {MIN_FRAMES}",
            args.io.uri,
            shape.t
        );
    }
    let field = (shape.y * shape.x).max(1);
    let len = args
        .chunk_frames
        .unwrap_or_else(|| ((1u64 << 28) / field).max(500));
    let plan = segments(shape.t, len, rec.chunks()[0]);
    let started = std::time::Instant::now();
    let output = args.io.create_output()?;
    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "denoising", "movie": "movie", "input": args.io.uri,
               "method": "local low-rank (PMD-style): overlapping blocks, randomized truncated SVD, components kept against a white-noise roughness null, tent-weighted recombination",
               "params": params}),
    );
    output.write_group(root)?;
    let mut meta = rec.meta().clone();
    meta.source = Some(format!("tessera denoise {}", args.io.uri));
    let options = WriteOptions {
        chunks: rec.chunks(),
        overwrite: args.io.overwrite,
        meta,
        zstd_level: tessera_io::DERIVED_ZSTD_LEVEL,
        ..WriteOptions::default()
    };
    let mut writer = RecordingWriter::<f32>::create(&output, shape, &options)?;
    let bar = crate::progress::frames(shape.t, "denoise");
    let mut reports = Vec::new();
    let mut ranks = Vec::new();
    for &(start, end) in &plan {
        let block = rec
            .read_box_f32(&Box3::within(&shape, start..end, 0..shape.y, 0..shape.x)?)
            .with_context(|| format!("failed to read frames {start}..{end} of {}", args.io.uri))?;
        let done = denoise(block.view(), &params).map_err(|e| match e {
            tessera_kernels::KernelError::NonFinite { frame, y, x } => anyhow::anyhow!(
                "{} holds a non-finite value ({}) at frame {}, pixel ({y}, {x}): denoising needs finite data (crop or fill such pixels first)",
                args.io.uri,
                block[[frame, y, x]],
                start + frame as u64
            ),
            other => anyhow::Error::new(other)
                .context(format!("failed to denoise frames {start}..{end}")),
        })?;
        writer.append(done.movie.view())?;
        let r = &done.report;
        ranks.push(
            Array3::from_shape_vec(
                (1, r.grid.0, r.grid.1),
                r.ranks.iter().map(|&k| k as u16).collect(),
            )
            .context("block grid")?,
        );
        reports.push(
            json!({"frames": [start, end], "noise_before": r.noise_before,
            "noise_after": r.noise_after, "compression_ratio": r.compression_ratio,
            "rank_limited_blocks": r.rank_limited_blocks, "blocks": r.ranks.len(),
            "mean_rank": r.ranks.iter().sum::<usize>() as f64 / r.ranks.len().max(1) as f64,
            "thresholds": r.thresholds}),
        );
        bar.set_position(end);
    }
    writer.finish()?;
    bar.finish_and_clear();
    let mut attrs = serde_json::Map::new();
    attrs.insert("segments".into(), json!(reports));
    output.write_group_at("denoise", attrs)?;
    let views: Vec<_> = ranks.iter().map(|r| r.view()).collect();
    output.write_array(
        "denoise/ranks",
        &ndarray::concatenate(Axis(0), &views)?.into_dyn(),
        &["segment", "block_y", "block_x"],
        serde_json::Map::new(),
    )?;
    let store = rec.store();
    if store.attributes("registration/shifts")?.is_some() {
        let shifts = store
            .read_array::<f32>("registration/shifts")
            .context("failed to read registration/shifts of the registered input")?;
        output.write_group_at("registration", serde_json::Map::new())?;
        output.write_array(
            "registration/shifts",
            &shifts,
            &["t", "axis"],
            serde_json::Map::new(),
        )?;
    }
    output.set_provenance(crate::provenance::record(
        "denoise",
        began,
        &[&args.io.uri],
    )?)?;
    let location = output.finish()?;
    let weighted = |key: &str| {
        reports
            .iter()
            .map(|r| {
                let f = &r["frames"];
                let n = f[1].as_f64().unwrap_or(0.0) - f[0].as_f64().unwrap_or(0.0);
                r[key].as_f64().unwrap_or(f64::NAN) * n
            })
            .sum::<f64>()
            / shape.t as f64
    };
    println!(
        "denoised {} frames of {}x{} -> {location} in {:.1} s ({} segment(s)): noise {:.3} -> {:.3} (median per pixel), compression {:.1}x",
        shape.t,
        shape.y,
        shape.x,
        started.elapsed().as_secs_f64(),
        plan.len(),
        weighted("noise_before"),
        weighted("noise_after"),
        weighted("compression_ratio"),
    );
    let limited: u64 = reports
        .iter()
        .map(|r| r["rank_limited_blocks"].as_u64().unwrap_or(0))
        .sum();
    if limited > 0 {
        eprintln!(
            "warning: {limited} block(s) kept the maximum of {} components and may hold more signal (raise --max-rank)",
            params.max_rank
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_partition_the_frames_and_absorb_a_short_remainder() {
        assert_eq!(segments(1500, 4096, 100), vec![(0, 1500)]);
        assert_eq!(segments(2400, 1000, 100), vec![(0, 1000), (1000, 2400)]);
        assert_eq!(
            segments(2600, 1000, 100),
            vec![(0, 1000), (1000, 2000), (2000, 2600)]
        );
        // Rounded up to whole storage chunks.
        assert_eq!(
            segments(900, 250, 100),
            vec![(0, 300), (300, 600), (600, 900)]
        );
        for (t, len, ct) in [(17, 16, 1), (1000, 333, 7), (50, 500, 64)] {
            let s = segments(t, len, ct);
            assert_eq!(s[0].0, 0);
            assert_eq!(s.last().map(|x| x.1), Some(t));
            assert!(s.windows(2).all(|w| w[0].1 == w[1].0));
        }
    }
}
