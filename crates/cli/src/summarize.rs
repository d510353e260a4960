//! `tessera summarize`: summary images of a recording, streamed chunk-row by chunk-row.
//!
//! Output group `<out>/summary/{mean,max,std,correlation,pnr,noise}`, each (y, x) float32.

use anyhow::bail;
use ndarray::Array2;
use serde_json::json;
use tessera_kernels::stats::{PsdAverage, SummaryStats, noise_image};
use tessera_kernels::summary::{LocalCorrelation, pnr_image};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub io: crate::transform::Transform,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = crate::provenance::Started::now();
    let rec = args.io.open_input()?;
    let shape = rec.shape();
    let (h, w) = (shape.y as usize, shape.x as usize);
    let output = args.io.create_output()?;
    let started = std::time::Instant::now();
    let mut stats = SummaryStats::empty(h, w);
    let mut corr = LocalCorrelation::empty(h, w);
    let mut noise_acc = Array2::<f64>::zeros((h, w));
    let mut noise_frames = 0u64;
    let bar = crate::progress::frames(shape.t, "summarize");
    let sat = rec.dtype().saturation_value().map(|v| v as f32);
    crate::transform::for_each_chunk_row(&rec, 16, |t, block| {
        let end = t + block.len_of(ndarray::Axis(0)) as u64;
        if let Some(((dt, y, x), v)) = block.indexed_iter().find(|(_, v)| !v.is_finite()) {
            bail!(
                "{} holds a non-finite value ({v}) at frame {}, pixel ({y}, {x}): summary images need finite data (crop or fill such pixels first)",
                args.io.uri,
                t as usize + dt
            );
        }
        let (s, c) = rayon::join(
            || SummaryStats::from_movie(block.view(), sat),
            || LocalCorrelation::from_movie(block.view()),
        );
        // `merge` consumes: swap an empty placeholder in while merging.
        stats = std::mem::replace(&mut stats, SummaryStats::empty(0, 0)).merge(&s)?;
        corr = std::mem::replace(&mut corr, LocalCorrelation::empty(0, 0)).merge(&c)?;
        if end - t >= 16 {
            let n = noise_image(block.view(), PsdAverage::Mean);
            noise_acc.zip_mut_with(&n, |a, &b| *a += f64::from(b) * (end - t) as f64);
            noise_frames += end - t;
        }
        bar.set_position(end);
        Ok(())
    })?;
    bar.finish_and_clear();
    let noise = noise_acc.mapv(|v| (v / noise_frames.max(1) as f64) as f32);
    let mean = stats.mean();
    let pnr = pnr_image(&stats.max, &mean, &noise);
    let correlation = corr.image();
    let mut attrs = serde_json::Map::new();
    attrs.insert(
        "tessera".into(),
        json!({"kind": "summary", "input": args.io.uri, "frames": shape.t,
               "noise": "per-pixel PSD over 0.25-0.5 cycles/frame, frame-weighted mean over chunks",
               "correlation": "mean Pearson r with the 8 neighbours (CaImAn local_correlations)",
               "pnr": "(max - mean) / noise"}),
    );
    output.write_group(attrs)?;
    output.write_group_at("summary", serde_json::Map::new())?;
    let none = serde_json::Map::new;
    for (name, img) in [
        ("mean", mean),
        ("max", stats.max.clone()),
        ("std", stats.std()),
        ("correlation", correlation.clone()),
        ("pnr", pnr),
        ("noise", noise),
    ] {
        output.write_array(
            &format!("summary/{name}"),
            &img.into_dyn(),
            &["y", "x"],
            none(),
        )?;
    }
    output.set_provenance(crate::provenance::record(
        "summarize",
        began,
        &[&args.io.uri],
    )?)?;
    let location = output.finish()?;
    let cmax = correlation.iter().copied().fold(f32::MIN, f32::max);
    println!(
        "summarised {} frames of {h}x{w} -> {location} in {:.1} s (correlation image max {cmax:.3}, saturated {:.4}%)",
        shape.t,
        started.elapsed().as_secs_f64(),
        100.0 * stats.saturated_fraction()
    );
    Ok(())
}
