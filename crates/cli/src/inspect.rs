//! `tessera inspect`.

use anyhow::Context;
use serde::Serialize;
use tessera_core::Box3;
use tessera_io::Recording;
use tessera_kernels::stats::{PsdAverage, SummaryStats, noise_image};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recording location (path, file://, memory://, s3://, gs://, http(s)://).
    pub uri: String,
    /// Array path inside the store (default: the root array, else movie, data or 0).
    #[arg(long)]
    pub array: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Frames read for the quick statistics (in up to 4 contiguous blocks spread over the movie).
    #[arg(long, default_value_t = 256)]
    pub sample_frames: u64,
}

#[derive(Debug, Serialize)]
struct Quantiles {
    min: f64,
    p01: f64,
    median: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Stats {
    frames_sampled: u64,
    blocks: Vec<[u64; 2]>,
    mean_image: Quantiles,
    saturation_level: Option<f64>,
    saturation_fraction: f64,
    /// `None` when fewer than 16 consecutive frames could be sampled.
    noise_median: Option<f64>,
    noise_method: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    location: String,
    array: String,
    zarr_format: u8,
    shape: [u64; 3],
    dtype: String,
    chunks: [u64; 3],
    subchunks: Option<[u64; 3]>,
    codecs: Vec<String>,
    metadata: tessera_core::RecordingMeta,
    attributes: serde_json::Map<String, serde_json::Value>,
    stats: Stats,
}

fn quantiles(values: &mut [f32]) -> Quantiles {
    values.sort_by(f32::total_cmp);
    let q = |p: f64| {
        let i = ((values.len() - 1) as f64 * p).round() as usize;
        f64::from(values[i])
    };
    Quantiles {
        min: q(0.0),
        p01: q(0.01),
        median: q(0.5),
        p99: q(0.99),
        max: q(1.0),
    }
}

/// Up to four contiguous blocks of frames, spread over the movie and aligned to chunk starts.
fn sample_blocks(frames: u64, chunk_t: u64, wanted: u64) -> Vec<[u64; 2]> {
    let wanted = wanted.clamp(1, frames);
    if wanted == frames {
        return vec![[0, frames]];
    }
    let blocks = 4u64.min(frames.div_ceil(chunk_t)).max(1);
    let len = wanted.div_ceil(blocks);
    (0..blocks)
        .map(|i| {
            let start = (frames - len) * i / (blocks - 1).max(1);
            let start = (start / chunk_t) * chunk_t;
            [start, (start + len).min(frames)]
        })
        .fold(Vec::<[u64; 2]>::new(), |mut acc, b| {
            if acc.last().is_none_or(|l| b[0] >= l[1]) {
                acc.push(b);
            }
            acc
        })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rec = Recording::open(&args.uri, args.array.as_deref())
        .with_context(|| format!("failed to open recording {}", args.uri))?;
    let shape = rec.shape();
    let blocks = sample_blocks(shape.t, rec.chunks()[0], args.sample_frames);
    let saturation = rec.dtype().saturation_value();
    let mut summary = SummaryStats::empty(shape.y as usize, shape.x as usize);
    let mut noise_sum = ndarray::Array2::<f32>::zeros((shape.y as usize, shape.x as usize));
    let mut noise_blocks = 0u32;
    for [t0, t1] in &blocks {
        let b = Box3::within(&shape, *t0..*t1, 0..shape.y, 0..shape.x)?;
        let movie = rec
            .read_box_f32(&b)
            .with_context(|| format!("failed to read frames {t0}..{t1} of {}", args.uri))?;
        summary = summary.merge(&SummaryStats::from_movie(
            movie.view(),
            saturation.map(|s| s as f32),
        ))?;
        if t1 - t0 >= 16 {
            noise_sum += &noise_image(movie.view(), PsdAverage::Mean);
            noise_blocks += 1;
        }
    }
    let mut mean: Vec<f32> = summary.mean().into_iter().collect();
    let mut noise: Vec<f32> = noise_sum
        .mapv(|v| v / noise_blocks.max(1) as f32)
        .into_iter()
        .collect();
    let noise_median = (noise_blocks > 0).then(|| quantiles(&mut noise).median);
    let report = Report {
        location: rec.store().location().to_string(),
        array: rec.array_path().to_string(),
        zarr_format: rec.zarr_format(),
        shape: shape.to_array(),
        dtype: rec.dtype().to_string(),
        chunks: rec.chunks(),
        subchunks: rec.subchunks(),
        codecs: rec.codecs(),
        metadata: rec.meta().clone(),
        attributes: rec.attributes().clone(),
        stats: Stats {
            frames_sampled: summary.frames,
            blocks,
            mean_image: quantiles(&mut mean),
            saturation_level: saturation,
            saturation_fraction: summary.saturated_fraction(),
            noise_median,
            noise_method: "per-pixel PSD over 0.25-0.5 cycles/frame (mean), median over pixels",
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let m = &report.metadata;
    let s = &report.stats;
    println!(
        "recording   {} (array {}, zarr v{})",
        report.location, report.array, report.zarr_format
    );
    println!(
        "shape       t={} y={} x={}  ({})",
        shape.t, shape.y, shape.x, report.dtype
    );
    match report.subchunks {
        Some(sc) => println!(
            "chunks      {:?} (shards), inner chunks {:?}",
            report.chunks, sc
        ),
        None => println!("chunks      {:?}", report.chunks),
    }
    println!("codecs      {}", report.codecs.join(" -> "));
    let opt = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x} {unit}"))
            .unwrap_or_else(|| "unknown".into())
    };
    println!("frame rate  {}", opt(m.frame_rate_hz, "Hz"));
    println!("pixel size  {}", opt(m.pixel_size_um, "um"));
    if let Some(i) = &m.indicator {
        println!("indicator   {i}");
    }
    if let Some(src) = &m.source {
        println!("source      {src}");
    }
    println!(
        "mean image  min {:.1}  p1 {:.1}  median {:.1}  p99 {:.1}  max {:.1}   ({} frames sampled)",
        s.mean_image.min,
        s.mean_image.p01,
        s.mean_image.median,
        s.mean_image.p99,
        s.mean_image.max,
        s.frames_sampled
    );
    match s.saturation_level {
        Some(l) => println!(
            "saturation  {:.4}% of samples at {l}",
            100.0 * s.saturation_fraction
        ),
        None => println!("saturation  n/a (float data)"),
    }
    match s.noise_median {
        Some(n) => println!(
            "noise       {n:.2} (median per-pixel sd, {})",
            s.noise_method
        ),
        None => println!("noise       n/a (fewer than 16 consecutive frames)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_disjoint_aligned_and_cover_the_request() {
        let b = sample_blocks(10_000, 64, 256);
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|[s, e]| s % 64 == 0 && e > s && *e <= 10_000));
        assert!(b.windows(2).all(|w| w[0][1] <= w[1][0]));
        assert_eq!(sample_blocks(100, 64, 256), vec![[0, 100]]);
        let small = sample_blocks(130, 64, 100);
        assert!(small.iter().all(|[s, e]| e > s && *e <= 130));
    }
}
