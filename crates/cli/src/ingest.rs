//! `tessera ingest`.

use std::path::PathBuf;

use anyhow::Context;
use tessera_io::{IngestOptions, WriteOptions, ingest_tiff};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A multi-page TIFF/BigTIFF file, or a folder of single-frame TIFFs (read in natural name order).
    pub source: PathBuf,
    /// Output location of the Zarr v3 recording (path, file://, memory://, s3://, gs://).
    #[arg(short, long)]
    pub out: String,
    /// Frame rate in Hz (overrides what the source's headers say).
    #[arg(long)]
    pub frame_rate: Option<f64>,
    /// Pixel size in micrometres (overrides what the source's headers say).
    #[arg(long)]
    pub pixel_size: Option<f64>,
    /// Indicator name, e.g. GCaMP6s.
    #[arg(long)]
    pub indicator: Option<String>,
    /// Chunk shape t,y,x.
    #[arg(long, value_parser = parse_chunks, default_value = "64,128,128")]
    pub chunks: [u64; 3],
    /// zstd compression level.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Name of the array inside the output group.
    #[arg(long, default_value = "movie")]
    pub array: String,
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
}

/// Parses `t,y,x` into three positive integers.
pub fn parse_chunks(s: &str) -> Result<[u64; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Result<Vec<u64>, _> = parts.iter().map(|p| p.parse::<u64>()).collect();
    match nums {
        Ok(v) if v.len() == 3 && v.iter().all(|&n| n > 0) => Ok([v[0], v[1], v[2]]),
        _ => Err(format!("expected three positive integers t,y,x, got '{s}'")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = IngestOptions {
        write: WriteOptions {
            array_path: args.array.clone(),
            chunks: args.chunks,
            zstd_level: args.zstd_level,
            overwrite: args.overwrite,
            ..WriteOptions::default()
        },
        frame_rate_hz: args.frame_rate,
        pixel_size_um: args.pixel_size,
        indicator: args.indicator.clone(),
    };
    let mut bar = None;
    let started = std::time::Instant::now();
    let began = crate::provenance::Started::now();
    let source = args.source.display().to_string();
    let report = ingest_tiff(
        &args.source,
        &args.out,
        &options,
        &mut |done, total| {
            let b = bar.get_or_insert_with(|| crate::progress::frames(total, "ingest"));
            b.set_position(done);
        },
        &mut || {
            crate::provenance::record("ingest", began, &[&source])
                .map(Some)
                .map_err(|e| tessera_io::IoError::Invalid(format!("{e:#}")))
        },
    )
    .with_context(|| {
        format!(
            "failed to ingest {} into {}",
            args.source.display(),
            args.out
        )
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let mb = (report.shape.len() as usize * report.dtype.size()) as f64 / 1e6;
    println!(
        "ingested {} frames of {}x{} {} from {} file(s) into {} ({mb:.1} MB in {secs:.1} s, {:.0} MB/s)",
        report.shape.t,
        report.shape.y,
        report.shape.x,
        report.dtype,
        report.files,
        report.location,
        mb / secs.max(1e-9)
    );
    let m = &report.meta;
    println!(
        "frame rate: {}, pixel size: {}",
        m.frame_rate_hz
            .map(|r| format!("{r} Hz"))
            .unwrap_or_else(|| "unknown (pass --frame-rate)".into()),
        m.pixel_size_um
            .map(|p| format!("{p} um"))
            .unwrap_or_else(|| "unknown (pass --pixel-size)".into()),
    );
    Ok(())
}
