//! The summary task: mean, max, standard deviation, local correlation, peak-to-noise and noise
//! images of the whole movie, streamed in runs of frames whose statistics merge exactly (as
//! `tessera summarize`).

use ndarray::{Array2, Axis};
use serde_json::json;
use tessera_core::Box3;
use tessera_io::Output;
use tessera_kernels::stats::{PsdAverage, SummaryStats, noise_image};
use tessera_kernels::summary::{LocalCorrelation, pnr_image};

use super::{frames_per_run, write_images};
use crate::{Done, MovieReader, TaskSpec, WorkerError};

pub(super) fn run(spec: &TaskSpec, out: &Output) -> Result<Done, WorkerError> {
    let reader = MovieReader::open(&spec.movie)?;
    let shape = reader.shape();
    let (h, w) = (shape.y as usize, shape.x as usize);
    let mut stats = SummaryStats::empty(h, w);
    let mut corr = LocalCorrelation::empty(h, w);
    let mut noise_acc = Array2::<f64>::zeros((h, w));
    let mut noise_frames = 0u64;
    for run in reader.frame_runs(frames_per_run(spec, 4.0)) {
        let block = reader.read(&Box3::within(
            &shape,
            run.start as u64..run.end as u64,
            0..shape.y,
            0..shape.x,
        )?)?;
        let (s, c) = rayon::join(
            || SummaryStats::from_movie(block.view(), None),
            || LocalCorrelation::from_movie(block.view()),
        );
        stats = std::mem::replace(&mut stats, SummaryStats::empty(0, 0)).merge(&s)?;
        corr = std::mem::replace(&mut corr, LocalCorrelation::empty(0, 0)).merge(&c)?;
        let n = block.len_of(Axis(0)) as u64;
        if n >= 16 {
            let img = noise_image(block.view(), PsdAverage::Mean);
            noise_acc.zip_mut_with(&img, |a, &b| *a += f64::from(b) * n as f64);
            noise_frames += n;
        }
    }
    let noise = noise_acc.mapv(|v| (v / noise_frames.max(1) as f64) as f32);
    let mean = stats.mean();
    let pnr = pnr_image(&stats.max, &mean, &noise);
    let correlation = corr.image();
    write_images(
        out,
        "summary",
        [
            ("mean", mean),
            ("max", stats.max.clone()),
            ("std", stats.std()),
            ("correlation", correlation),
            ("pnr", pnr),
            ("noise", noise),
        ],
    )?;
    Ok(Done {
        figures: json!({"frames": shape.t}),
        publishes: vec![
            "summary/mean",
            "summary/max",
            "summary/std",
            "summary/correlation",
            "summary/pnr",
            "summary/noise",
        ],
    })
}
