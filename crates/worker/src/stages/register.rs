//! Registration tasks: each registers one run of frames against a template every task of the stage
//! builds the same way from the same frames, so the runs line up without talking to each other.
//!
//! The template follows `tessera register`: frames sampled in 8 chunk-aligned runs spread over the
//! movie, an iteratively refined mean ([`RigidRegistration::from_movie`]), then moved to the
//! sample's median shift so the output keeps the recording's own frame of reference. (`tessera
//! register` takes the median over up to 1000 evenly spaced frames; a task takes it over the
//! template sample, which it has already read.)

use ndarray::{Array1, Array2, Array3, Axis, concatenate};
use rayon::prelude::*;
use serde_json::json;
use tessera_core::{Box3, Shape3};
use tessera_io::{Output, RecordingWriter};
use tessera_kernels::register::{
    FrameShift, PiecewiseParams, PiecewiseRegistration, RigidParams, RigidRegistration,
    shift_frame_filled,
};

use super::{params_over, piece_options};
use crate::{Done, MovieReader, TaskSpec, WorkerError};

/// Up to `wanted` frames in 8 contiguous runs spread over the movie, each starting at a chunk
/// boundary.
pub fn template_sample(reader: &MovieReader, wanted: usize) -> Result<Array3<f32>, WorkerError> {
    let shape = reader.shape();
    let ct = reader.chunk_frames();
    let runs = 8u64.min(shape.t.div_ceil(ct)).max(1);
    let per_run = (wanted as u64).div_ceil(runs).max(1);
    let mut blocks = Vec::new();
    let mut last_end = 0;
    for i in 0..runs {
        let start = ((shape.t - per_run.min(shape.t)) * i / (runs - 1).max(1)) / ct * ct;
        let start = start.max(last_end);
        let end = (start + per_run).min(shape.t);
        if start >= end {
            continue;
        }
        last_end = end;
        blocks.push(reader.read(&Box3::within(&shape, start..end, 0..shape.y, 0..shape.x)?)?);
    }
    let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
    Ok(concatenate(Axis(0), &views)?)
}

type Registered = (FrameShift, Option<(Array2<f32>, Array2<f32>)>, Array2<f32>);

pub(super) fn run(spec: &TaskSpec, out: &Output, piecewise: bool) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let shape = reader.shape();
    let (rigid, pw_params) = if piecewise {
        let p: PiecewiseParams = params_over(spec, PiecewiseParams::default(), &[])?;
        (RigidParams::default(), Some(p))
    } else {
        (params_over(spec, RigidParams::default(), &[])?, None)
    };
    let sample = template_sample(&reader, rigid.template_frames)?;
    let seeded = RigidRegistration::from_movie(sample.view(), rigid.clone())?;
    let first = seeded.estimate_all(sample.view());
    drop(sample);
    let reg = seeded.recentred(&first)?;
    let pw = match &pw_params {
        Some(p) => Some(PiecewiseRegistration::new(
            reg.template().clone(),
            rigid.clone(),
            p,
        )?),
        None => None,
    };
    let core = spec.tile.core.clone();
    let n = core.t.end - core.t.start;
    let options = piece_options(spec);
    let mut writer =
        RecordingWriter::<f32>::create(out, Shape3::new(n, shape.y, shape.x)?, &options)?;
    let mut shifts = Vec::with_capacity(n as usize);
    let mut blocks = Vec::new();
    let ct = reader.chunk_frames();
    let mut t0 = core.t.start;
    while t0 < core.t.end {
        let t1 = ((t0 / ct + 1) * ct).min(core.t.end);
        let block = reader.read(&Box3::within(&shape, t0..t1, 0..shape.y, 0..shape.x)?)?;
        let rigid_shifts = match &pw {
            Some(_) => Vec::new(),
            None => reg.estimate_all(block.view()),
        };
        let done: Vec<Registered> = (0..block.len_of(Axis(0)))
            .into_par_iter()
            .map(|i| {
                let frame = block.index_axis(Axis(0), i);
                match &pw {
                    Some(pw) => {
                        let s = pw.estimate(frame);
                        let moved = pw.apply(frame, &s);
                        (s.rigid, Some((s.block_dy, s.block_dx)), moved)
                    }
                    None => {
                        let s = rigid_shifts[i];
                        (
                            s,
                            None,
                            shift_frame_filled(frame, s.dy, s.dx, reg.template().view()),
                        )
                    }
                }
            })
            .collect();
        let views: Vec<_> = done
            .iter()
            .map(|d| d.2.view().insert_axis(Axis(0)))
            .collect();
        writer.append(concatenate(Axis(0), &views)?.view())?;
        for (s, b, _) in done {
            shifts.push(s);
            if let Some(b) = b {
                blocks.push(b);
            }
        }
        t0 = t1;
    }
    writer.finish()?;
    let n_clipped = write_registration(out, &shifts, &blocks, reg.template())?;
    let largest = shifts
        .iter()
        .map(|s| s.dy.hypot(s.dx))
        .fold(0.0f32, f32::max);
    Ok(Done {
        figures: json!({"frames": n, "largest_shift_px": largest, "clipped_frames": n_clipped,
                        "max_shift_px": reg.max_shift_px()}),
        publishes: Vec::new(),
    })
}

/// Writes the `registration/` group: per frame its rigid shift (`shifts`, (t, 2): dy, dx),
/// correlation peak and whether the shift hit the limit (`clipped`); the template; and for
/// piecewise registration the per-block shifts (`block_shifts`, (t, by, bx, 2)). Returns the
/// number of clipped frames.
pub fn write_registration(
    out: &Output,
    shifts: &[FrameShift],
    blocks: &[(Array2<f32>, Array2<f32>)],
    template: &Array2<f32>,
) -> Result<usize, WorkerError> {
    out.write_group_at("registration", serde_json::Map::new())?;
    let none = serde_json::Map::new;
    let d = Array2::from_shape_fn((shifts.len(), 2), |(t, a)| {
        if a == 0 { shifts[t].dy } else { shifts[t].dx }
    });
    out.write_array("registration/shifts", &d.into_dyn(), &["t", "axis"], none())?;
    let peak = Array1::from_iter(shifts.iter().map(|s| s.peak));
    out.write_array("registration/peak", &peak.into_dyn(), &["t"], none())?;
    let clipped = Array1::from_iter(shifts.iter().map(|s| u8::from(s.clipped)));
    let n_clipped = clipped.iter().filter(|&&c| c == 1).count();
    out.write_array("registration/clipped", &clipped.into_dyn(), &["t"], none())?;
    out.write_array(
        "registration/template",
        &template.clone().into_dyn(),
        &["y", "x"],
        none(),
    )?;
    if let Some(first) = blocks.first() {
        let (ny, nx) = first.0.dim();
        let mut b = ndarray::Array4::<f32>::zeros((blocks.len(), ny, nx, 2));
        for (t, (dy, dx)) in blocks.iter().enumerate() {
            b.slice_mut(ndarray::s![t, .., .., 0]).assign(dy);
            b.slice_mut(ndarray::s![t, .., .., 1]).assign(dx);
        }
        out.write_array(
            "registration/block_shifts",
            &b.into_dyn(),
            &["t", "block_y", "block_x", "axis"],
            none(),
        )?;
    }
    Ok(n_clipped)
}
