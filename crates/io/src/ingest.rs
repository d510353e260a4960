//! `tessera ingest`: TIFF in, Zarr v3 recording out, streaming one chunk-row of frames at a time.

use std::path::Path;

use ndarray::ArrayView3;
use tessera_core::{Dtype, RecordingMeta};
use tiff::decoder::DecodingResult;

use crate::writer::{Output, RecordingWriter, Sample, WriteOptions};
use crate::{IoError, Location, TiffSource};

/// What to ingest and how.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    pub write: WriteOptions,
    /// Values given by the user; they take precedence over values found in the source.
    pub frame_rate_hz: Option<f64>,
    pub pixel_size_um: Option<f64>,
    pub indicator: Option<String>,
}

/// What an ingest wrote.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub location: Location,
    pub shape: tessera_core::Shape3,
    pub dtype: Dtype,
    pub meta: RecordingMeta,
    pub files: usize,
}

/// Pixel vectors of a decoded TIFF page, as the writer's element type.
trait FromDecoded: Sample {
    fn take(d: DecodingResult) -> Option<Vec<Self>>;
}

macro_rules! from_decoded {
    ($t:ty, $v:ident) => {
        impl FromDecoded for $t {
            fn take(d: DecodingResult) -> Option<Vec<Self>> {
                match d {
                    DecodingResult::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
from_decoded!(u8, U8);
from_decoded!(u16, U16);
from_decoded!(u32, U32);
from_decoded!(u64, U64);
from_decoded!(i8, I8);
from_decoded!(i16, I16);
from_decoded!(i32, I32);
from_decoded!(i64, I64);
from_decoded!(f32, F32);
from_decoded!(f64, F64);

/// Converts the TIFF recording at `source` into a Zarr v3 recording at `dest`.
/// `progress(frames_done, frames_total)` is called after each block of frames; `provenance()` once
/// the frames are written, for the record to set on the output (see [`Output::set_provenance`]).
pub fn ingest_tiff(
    source: &Path,
    dest: &str,
    options: &IngestOptions,
    progress: &mut dyn FnMut(u64, u64),
    provenance: &mut dyn FnMut() -> Result<Option<serde_json::Value>, IoError>,
) -> Result<IngestReport, IoError> {
    for (name, v) in [
        ("frame rate", options.frame_rate_hz),
        ("pixel size", options.pixel_size_um),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(IoError::Invalid(format!(
                "{name} must be a positive number, got {v}"
            )));
        }
    }
    let src = TiffSource::open(source)?;
    let mut meta = src.found_meta().clone();
    if options.frame_rate_hz.is_some() {
        meta.frame_rate_hz = options.frame_rate_hz;
    }
    if options.pixel_size_um.is_some() {
        meta.pixel_size_um = options.pixel_size_um;
    }
    if options.indicator.is_some() {
        meta.indicator = options.indicator.clone();
    }
    let mut write = options.write.clone();
    write.meta = meta.clone();
    let output = Output::create(dest, write.overwrite)?;
    let mut group_attrs = serde_json::Map::new();
    group_attrs.insert(
        "tessera".into(),
        serde_json::json!({ "kind": "recording", "movie": write.array_path, "source": src.path().display().to_string() }),
    );
    output.write_group(group_attrs)?;
    match src.dtype() {
        Dtype::Uint8 => copy_frames::<u8>(&src, &output, &write, progress)?,
        Dtype::Uint16 => copy_frames::<u16>(&src, &output, &write, progress)?,
        Dtype::Uint32 => copy_frames::<u32>(&src, &output, &write, progress)?,
        Dtype::Uint64 => copy_frames::<u64>(&src, &output, &write, progress)?,
        Dtype::Int8 => copy_frames::<i8>(&src, &output, &write, progress)?,
        Dtype::Int16 => copy_frames::<i16>(&src, &output, &write, progress)?,
        Dtype::Int32 => copy_frames::<i32>(&src, &output, &write, progress)?,
        Dtype::Int64 => copy_frames::<i64>(&src, &output, &write, progress)?,
        Dtype::Float32 => copy_frames::<f32>(&src, &output, &write, progress)?,
        Dtype::Float64 => copy_frames::<f64>(&src, &output, &write, progress)?,
    }
    if let Some(record) = provenance()? {
        output.set_provenance(record)?;
    }
    let location = output.finish()?;
    Ok(IngestReport {
        location,
        shape: src.shape(),
        dtype: src.dtype(),
        meta,
        files: src.file_count(),
    })
}

fn copy_frames<T: FromDecoded>(
    src: &TiffSource,
    output: &Output,
    write: &WriteOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), IoError> {
    let shape = src.shape();
    let mut writer = RecordingWriter::<T>::create(output, shape, write)?;
    let frame_len = shape.frame_len() as usize;
    let block = write.chunks[0].clamp(1, shape.t) as usize;
    let mut buf: Vec<T> = Vec::with_capacity(block * frame_len);
    let mut in_buf = 0usize;
    let mut done = 0u64;
    for frame in src.frames() {
        let pixels = T::take(frame?).ok_or_else(|| IoError::Tiff {
            path: src.path().to_path_buf(),
            reason: format!(
                "frame {done}: sample type differs from the first page ({})",
                src.dtype()
            ),
        })?;
        if pixels.len() != frame_len {
            return Err(IoError::Tiff {
                path: src.path().to_path_buf(),
                reason: format!(
                    "frame {done}: {} pixels decoded, expected {frame_len}",
                    pixels.len()
                ),
            });
        }
        buf.extend_from_slice(&pixels);
        in_buf += 1;
        done += 1;
        if in_buf == block {
            let view = ArrayView3::from_shape((in_buf, shape.y as usize, shape.x as usize), &buf)
                .map_err(|e| IoError::Invalid(e.to_string()))?;
            writer.append(view)?;
            buf.clear();
            in_buf = 0;
            progress(done, shape.t);
        }
    }
    if in_buf > 0 {
        let view = ArrayView3::from_shape((in_buf, shape.y as usize, shape.x as usize), &buf)
            .map_err(|e| IoError::Invalid(e.to_string()))?;
        writer.append(view)?;
        progress(done, shape.t);
    }
    writer.finish()
}
