//! `tessera register`: rigid motion correction of a recording, streamed one chunk-row at a time.
//!
//! Two passes over the recording: the first estimates the shifts of up to 1000 evenly spaced
//! frames against a template seeded from a sample of frames; the template is then moved to the
//! median of those shifts, and the second pass registers every frame against it and writes. The
//! registered movie therefore sits where the field sits most of the time (the recording's own pixel
//! frame, up to sub-pixel error), so ROIs found on it line up with the raw movie and with labels
//! drawn on it, whichever frames seeded the template. Pixels whose content moved out of view take
//! the template's value (rigid and piecewise registration alike).
//!
//! Output group:
//! ```text
//! <out>/movie                     registered (t, y, x), the input's integer type (rounded) or float32
//! <out>/registration/shifts       (t, 2) float32: (dy, dx) displacement of each input frame
//! <out>/registration/peak         (t,) float32 phase-correlation peak
//! <out>/registration/clipped      (t,) uint8: 1 where the shift hit --max-shift
//! <out>/registration/template     (y, x) float32
//! <out>/registration/block_shifts (t, block_y, block_x, 2) float32, with --piecewise: each block's
//!                                 residual (dy, dx) after the rigid shift (smoothed)
//! ```

use anyhow::Context;
use ndarray::{Array2, Array3, Axis, s};
use rayon::prelude::*;
use serde_json::json;
use tessera_core::{Box3, Dtype};
use tessera_io::{Output, Recording, RecordingWriter, Sample, WriteOptions};
use tessera_kernels::register::{
    FrameShift, PiecewiseParams, PiecewiseRegistration, RigidParams, RigidRegistration,
    shift_frame_filled,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub io: crate::transform::Transform,
    /// Largest shift searched, in pixels.
    #[arg(long, default_value_t = RigidParams::default().max_shift_px)]
    pub max_shift: f64,
    /// Frames sampled to build the template.
    #[arg(long, default_value_t = RigidParams::default().template_frames)]
    pub template_frames: usize,
    /// After the rigid shift, register overlapping blocks too (piecewise-rigid, NoRMCorre-style).
    #[arg(long)]
    pub piecewise: bool,
    /// Block edge (px) of the piecewise-rigid stage.
    #[arg(long, default_value_t = PiecewiseParams::default().block_px)]
    pub block_px: usize,
    /// Largest residual shift (px) of a block after the rigid shift.
    #[arg(long, default_value_t = PiecewiseParams::default().max_shift_px)]
    pub block_max_shift: f64,
}

/// Shifts of every frame, and for piecewise registration each frame's block shifts (dy, dx grids).
type Shifts = (Vec<FrameShift>, Vec<(Array2<f32>, Array2<f32>)>);

/// One registered frame's rigid shift and block shifts (piecewise only).
type Registered = (FrameShift, Option<(Array2<f32>, Array2<f32>)>);

/// Frames the first pass samples at most: enough for the median position to within a few
/// hundredths of a pixel, while the second pass still registers every frame.
const CENTRING_FRAMES: u64 = tessera_kernels::register::CENTRING_FRAMES as u64;

/// First pass: the rigid shifts of a sample of frames against `reg`; nothing written. A recording
/// up to [`CENTRING_FRAMES`] long is sampled whole; a longer one as evenly spaced chunk rows (whole
/// rows, so no chunk is decompressed for a few of its frames) adding up to about that many frames.
fn estimate_shifts(
    rec: &Recording,
    reg: &RigidRegistration,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<FrameShift>> {
    let shape = rec.shape();
    let ct = rec.chunks()[0].max(1);
    let rows = shape.t.div_ceil(ct);
    let picked = CENTRING_FRAMES.div_ceil(ct).clamp(1, rows.max(1));
    let mut shifts = Vec::with_capacity(CENTRING_FRAMES.min(shape.t) as usize);
    // One chunk row's frames, reused row after row (a fresh array per row is a fresh mmap whose
    // pages all fault in again: 64 MiB a row at 512 x 512).
    let row_frames = ct.min(shape.t) as usize;
    let mut buffer = Array3::<f32>::zeros((row_frames, shape.y as usize, shape.x as usize));
    for i in 0..picked {
        let t = i * rows / picked * ct;
        let end = (t + ct).min(shape.t);
        let mut block = buffer.slice_mut(s![..(end - t) as usize, .., ..]);
        rec.read_box_f32_into(
            &Box3::within(&shape, t..end, 0..shape.y, 0..shape.x)?,
            block.view_mut(),
        )
        .with_context(|| format!("failed to read frames {t}..{end}"))?;
        // Rows longer than the sample needs (long chunks) are thinned evenly.
        let n = (end - t) as usize;
        let want = CENTRING_FRAMES.div_ceil(picked) as usize;
        if n > 2 * want {
            let picks: Vec<usize> = (0..want).map(|k| k * n / want).collect();
            shifts.extend(reg.estimate_all(block.select(Axis(0), &picks).view()));
        } else {
            shifts.extend(reg.estimate_all(block.view()));
        }
        bar.set_position((i + 1) * shape.t / picked);
    }
    Ok(shifts)
}

fn register_into<T: Sample>(
    rec: &Recording,
    reg: &RigidRegistration,
    piecewise: Option<&PiecewiseRegistration>,
    output: &Output,
    options: &WriteOptions,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Shifts> {
    let shape = rec.shape();
    let mut writer = RecordingWriter::<T>::create(output, shape, options)?;
    let mut shifts = Vec::with_capacity(shape.t as usize);
    let mut blocks = Vec::new();
    // One chunk row of registered frames, reused row after row.
    let rows = rec.chunks()[0].clamp(1, shape.t.max(1)) as usize;
    let mut out = Array3::<T>::default((rows, shape.y as usize, shape.x as usize));
    crate::transform::for_each_chunk_row(rec, 1, |t, block| {
        let n = block.len_of(Axis(0));
        // Rigid shifts two frames per FFT; piecewise registration estimates its own.
        let rigid = match piecewise {
            Some(_) => Vec::new(),
            None => reg.estimate_all(block.view()),
        };
        let mut dst = out.slice_mut(s![..n, .., ..]);
        let done: Vec<Registered> = dst
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .map(|(i, mut o)| {
                let frame = block.index_axis(Axis(0), i);
                let (shift, block_shifts, pixels) = match piecewise {
                    Some(pw) => {
                        let s = pw.estimate(frame);
                        let pixels = pw.apply(frame, &s);
                        (s.rigid, Some((s.block_dy, s.block_dx)), pixels)
                    }
                    None => {
                        let s = rigid[i];
                        let pixels = shift_frame_filled(frame, s.dy, s.dx, reg.template().view());
                        (s, None, pixels)
                    }
                };
                ndarray::Zip::from(&mut o)
                    .and(&pixels)
                    .for_each(|d, &v| *d = T::from_f32(v));
                (shift, block_shifts)
            })
            .collect();
        writer.append(dst.view())?;
        for (s, b) in done {
            shifts.push(s);
            if let Some(b) = b {
                blocks.push(b);
            }
        }
        bar.set_position(shape.t + t + n as u64);
        Ok(())
    })?;
    writer.finish()?;
    Ok((shifts, blocks))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = crate::provenance::Started::now();
    let rec = args.io.open_input()?;
    let shape = rec.shape();
    let params = RigidParams {
        max_shift_px: args.max_shift,
        template_frames: args.template_frames,
        ..RigidParams::default()
    };
    // Registration streams chunk rows of frames (no budget to keep): decode buffers may stay in
    // the heap.
    crate::keep_chunk_buffers(&rec);
    let started = std::time::Instant::now();
    let reader = tessera_worker::MovieReader::open(&crate::transform::whole(&rec, &args.io.uri))?;
    let sample = tessera_worker::template_sample(&reader, params.template_frames)?;
    drop(reader);
    let seeded = RigidRegistration::from_movie(sample.view(), params.clone())?;
    // Two passes: shifts of a sample of frames against the seeded template, then registration against
    // the template moved to the median position, so the output keeps the recording's own frame.
    let bar = crate::progress::frames(2 * shape.t, "register");
    let first = estimate_shifts(&rec, &seeded, &bar)
        .with_context(|| format!("failed to register {}", args.io.uri))?;
    let reg = seeded.recentred(&first)?;
    let pw_params = PiecewiseParams {
        block_px: args.block_px,
        max_shift_px: args.block_max_shift,
    };
    let piecewise = if args.piecewise {
        Some(PiecewiseRegistration::new(
            reg.template().clone(),
            params.clone(),
            &pw_params,
        )?)
    } else {
        None
    };
    let output = args.io.create_output()?;
    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "registration", "movie": "movie", "input": args.io.uri,
               "method": if args.piecewise { "rigid then piecewise-rigid phase correlation" } else { "rigid phase correlation" },
               "params": params, "piecewise": if args.piecewise { serde_json::to_value(&pw_params)? } else { serde_json::Value::Null }}),
    );
    output.write_group(root)?;
    let mut meta = rec.meta().clone();
    meta.source = Some(format!("tessera register {}", args.io.uri));
    let options = WriteOptions {
        chunks: rec.chunks(),
        overwrite: args.io.overwrite,
        meta,
        zstd_level: tessera_io::DERIVED_ZSTD_LEVEL,
        ..WriteOptions::default()
    };
    let (shifts, block_shifts) = match rec.dtype() {
        Dtype::Uint8 => {
            register_into::<u8>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Uint16 => {
            register_into::<u16>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Uint32 => {
            register_into::<u32>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Uint64 => {
            register_into::<u64>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Int8 => register_into::<i8>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar),
        Dtype::Int16 => {
            register_into::<i16>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Int32 => {
            register_into::<i32>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Int64 => {
            register_into::<i64>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
        Dtype::Float32 | Dtype::Float64 => {
            register_into::<f32>(&rec, &reg, piecewise.as_ref(), &output, &options, &bar)
        }
    }
    .with_context(|| format!("failed to register {}", args.io.uri))?;
    bar.finish_and_clear();
    let n_clipped =
        tessera_worker::write_registration(&output, &shifts, &block_shifts, reg.template())?;
    output.set_provenance(crate::provenance::record(
        "register",
        began,
        &[&args.io.uri],
    )?)?;
    let location = output.finish()?;
    let max = shifts
        .iter()
        .map(|s| s.dy.hypot(s.dx))
        .fold(0.0f32, f32::max);
    println!(
        "registered {} frames of {}x{} -> {location} in {:.1} s: largest shift {max:.2} px, {n_clipped} frame(s) at the {} px limit",
        shape.t,
        shape.y,
        shape.x,
        started.elapsed().as_secs_f64(),
        reg.max_shift_px()
    );
    if n_clipped > 0 {
        if reg.max_shift_px() < args.max_shift {
            eprintln!(
                "warning: {n_clipped} frame(s) hit the shift limit of {} px, set by the field size (half the smaller side); their motion may be larger",
                reg.max_shift_px()
            );
        } else {
            eprintln!(
                "warning: {n_clipped} frame(s) hit the shift limit; their motion may be larger (raise --max-shift)"
            );
        }
    }
    Ok(())
}
