//! `tessera simulate`: a simulated recording plus its ground truth, in one Zarr v3 group.
//!
//! Layout of the output (see docs/FORMATS.md):
//! ```text
//! <out>/movie                         (t, y, x) uint16 recording
//! <out>/ground_truth/fluorescence     (cell, t) float32 noise-free F in photons
//! <out>/ground_truth/dff              (cell, t) float32 noise-free dF/F
//! <out>/ground_truth/spikes           (cell, t) uint8 spike counts per frame
//! <out>/ground_truth/motion           (t, 2) float32 rigid shift (dy, dx) of each frame
//! <out>/ground_truth/footprints/{cell,pixel,weight}   sparse footprints (pixel = y * width + x)
//! <out>/ground_truth/regions.json     neurofinder regions ([row, col] pixels with weight >= 0.2)
//! <out>/ground_truth/cells.json       per-cell table (kind, centre, radius, active, rate, ...)
//! <out>/ground_truth/config.json      the full simulation config
//! ```

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tessera_core::{RecordingMeta, Region, Shape3, regions_to_json};
use tessera_io::{Output, RecordingWriter, WriteOptions};
use tessera_kernels::sim::{
    GroundTruth, Indicator, PRESETS, REGION_THRESHOLD, SimConfig, Simulation,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output location (path, file://, memory://, s3://, gs://).
    #[arg(short, long, required_unless_present_any = ["list_presets", "print_config"])]
    pub out: Option<String>,
    /// Starting point: base, low-snr, dense, small-cells, large-motion, fast, endoscope.
    #[arg(long, default_value = "base")]
    pub preset: String,
    /// Start from a JSON config (as printed by --print-config) instead of a preset.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    #[arg(long)]
    pub frames: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Frames per second.
    #[arg(long)]
    pub frame_rate: Option<f64>,
    /// Pixel size in micrometres.
    #[arg(long)]
    pub pixel_size: Option<f64>,
    /// Indicator: GCaMP6s, GCaMP6m, GCaMP6f, jGCaMP7f, jGCaMP8m, jGCaMP8f.
    #[arg(long)]
    pub indicator: Option<String>,
    /// Somata per mm^2.
    #[arg(long)]
    pub density: Option<f64>,
    /// Median soma radius in micrometres.
    #[arg(long)]
    pub radius_um: Option<f64>,
    /// RMS rigid motion in pixels (0 disables motion).
    #[arg(long)]
    pub motion_px: Option<f64>,
    /// Photons per pixel per frame at a resting soma's peak (sets the SNR).
    #[arg(long)]
    pub photons: Option<f64>,
    /// Set any config field: --set name=value (repeatable; see --print-config for names).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// Chunk shape of the movie t,y,x.
    #[arg(long, value_parser = crate::ingest::parse_chunks, default_value = "64,128,128")]
    pub chunks: [u64; 3],
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
    /// List the presets and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// Print the resolved config as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

fn resolve_config(args: &Args) -> anyhow::Result<SimConfig> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read config {}", path.display()))?;
            serde_json::from_str::<SimConfig>(&text)
                .with_context(|| format!("invalid simulation config {}", path.display()))?
        }
        None => SimConfig::preset(&args.preset)?,
    };
    if let Some(v) = args.frames {
        c.frames = v;
    }
    if let Some(v) = args.height {
        c.height = v;
    }
    if let Some(v) = args.width {
        c.width = v;
    }
    if let Some(v) = args.seed {
        c.seed = v;
    }
    if let Some(v) = args.frame_rate {
        c.frame_rate_hz = v;
    }
    if let Some(v) = args.pixel_size {
        c.pixel_size_um = v;
    }
    if let Some(v) = &args.indicator {
        c.indicator = Indicator::named(v)?;
    }
    if let Some(v) = args.density {
        c.cell_density_per_mm2 = v;
    }
    if let Some(v) = args.radius_um {
        c.soma_radius_um = v;
    }
    if let Some(v) = args.motion_px {
        c.motion_rms_px = v;
        if v == 0.0 {
            c.motion_jump_probability = 0.0;
        }
    }
    if let Some(v) = args.photons {
        c.cell_photons = v;
    }
    if !args.sets.is_empty() {
        let mut value = serde_json::to_value(&c)?;
        for s in &args.sets {
            let Some((key, raw)) = s.split_once('=') else {
                bail!("--set expects NAME=VALUE, got '{s}'");
            };
            let parsed: Value =
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
            let mut target = &mut value;
            let parts: Vec<&str> = key.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let Some(obj) = target.as_object_mut() else {
                    bail!(
                        "--set {key}: '{}' is not a group of settings",
                        parts[..i].join(".")
                    );
                };
                if i + 1 == parts.len() {
                    if !obj.contains_key(*part) {
                        let known: Vec<&String> = obj.keys().collect();
                        bail!("--set {key}: unknown setting '{part}' (known: {known:?})");
                    }
                    obj.insert(part.to_string(), parsed.clone());
                    break;
                }
                target = obj
                    .get_mut(*part)
                    .with_context(|| format!("--set {key}: unknown setting '{part}'"))?;
            }
        }
        c = serde_json::from_value(value).context("invalid --set value")?;
    }
    c.validate()?;
    Ok(c)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let began = crate::provenance::Started::now();
    if args.list_presets {
        for p in PRESETS {
            let c = SimConfig::preset(p)?;
            println!(
                "{p:<13} {} at {} Hz, {} um px, soma radius {} um, {} cells/mm^2, {} photons, motion {} px",
                c.indicator.name,
                c.frame_rate_hz,
                c.pixel_size_um,
                c.soma_radius_um,
                c.cell_density_per_mm2,
                c.cell_photons,
                c.motion_rms_px
            );
        }
        return Ok(());
    }
    let config = resolve_config(&args)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let Some(out) = args.out.as_deref() else {
        bail!("--out is required")
    };
    let started = std::time::Instant::now();
    let sim = Simulation::new(config.clone())?;
    let (t, h, w) = sim.shape();
    let shape = Shape3::new(t as u64, h as u64, w as u64)?;
    let output = Output::create(out, args.overwrite)
        .with_context(|| format!("cannot write simulation to {out}"))?;
    let meta = RecordingMeta {
        frame_rate_hz: Some(config.frame_rate_hz),
        pixel_size_um: Some(config.pixel_size_um),
        indicator: Some(config.indicator.name.clone()),
        source: Some(format!(
            "tessera simulate --preset {} --seed {}",
            config.preset, config.seed
        )),
        acquisition: serde_json::Map::new(),
    };
    let options = WriteOptions {
        chunks: args.chunks,
        overwrite: args.overwrite,
        meta,
        ..WriteOptions::default()
    };
    let mut root = serde_json::Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "simulation", "movie": "movie", "ground_truth": "ground_truth", "preset": config.preset, "seed": config.seed}),
    );
    output.write_group(root)?;
    let mut writer = RecordingWriter::<u16>::create(&output, shape, &options)?;
    let bar = crate::progress::frames(t as u64, "simulate");
    let block = args.chunks[0].max(1) as usize;
    let mut start = 0;
    while start < t {
        let end = (start + block).min(t);
        let frames = sim.render(start, end);
        writer
            .append(frames.view())
            .with_context(|| format!("failed to write frames {start}..{end} to {out}"))?;
        bar.set_position(end as u64);
        start = end;
    }
    writer.finish()?;
    bar.finish_and_clear();
    let gt = sim.ground_truth();
    write_ground_truth(&output, &gt, &config, w)
        .with_context(|| format!("failed to write ground truth to {out}"))?;
    let config_input = args.config.as_ref().map(|c| c.display().to_string());
    let inputs: Vec<&str> = config_input.iter().map(String::as_str).collect();
    output.set_provenance(crate::provenance::record("simulate", began, &inputs)?)?;
    let location = output.finish()?;
    let active = gt.cells.iter().filter(|c| c.active).count();
    let spikes: u64 = gt.spikes.iter().map(|&s| u64::from(s)).sum();
    println!(
        "simulated {t} frames of {h}x{w} ({} preset, seed {}): {} cells ({active} active, {spikes} spikes) -> {location} in {:.1} s",
        config.preset,
        config.seed,
        gt.cells.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_ground_truth(
    output: &Output,
    gt: &GroundTruth,
    config: &SimConfig,
    width: usize,
) -> anyhow::Result<()> {
    let mut attrs = serde_json::Map::new();
    attrs.insert(
        "description".into(),
        "ground truth of a tessera simulation: traces are per cell (rows match cells.json ids)"
            .into(),
    );
    output.write_group_at("ground_truth", attrs)?;
    let no_attrs = serde_json::Map::new;
    output.write_array(
        "ground_truth/fluorescence",
        &gt.fluorescence.clone().into_dyn(),
        &["cell", "t"],
        no_attrs(),
    )?;
    output.write_array(
        "ground_truth/dff",
        &gt.dff.clone().into_dyn(),
        &["cell", "t"],
        no_attrs(),
    )?;
    output.write_array(
        "ground_truth/spikes",
        &gt.spikes.clone().into_dyn(),
        &["cell", "t"],
        no_attrs(),
    )?;
    output.write_array("ground_truth/motion", &gt.motion.clone().into_dyn(), &["t", "axis"], {
        let mut a = serde_json::Map::new();
        a.insert(
            "convention".into(),
            "frame t shows the reference scene displaced by (+dy, +dx); axis 0 = dy (rows), 1 = dx (columns)".into(),
        );
        a
    })?;
    output.write_footprints(
        "ground_truth/footprints",
        width,
        gt.cells
            .iter()
            .map(|c| (&c.footprint.pixels[..], &c.footprint.weights[..])),
    )?;
    let regions: Vec<Region> = gt
        .cells
        .iter()
        .map(|c| Region {
            coordinates: c
                .footprint
                .pixels
                .iter()
                .zip(&c.footprint.weights)
                .filter(|(_, w)| **w >= REGION_THRESHOLD)
                .map(|(&p, _)| [p / width as u32, p % width as u32])
                .collect(),
        })
        .collect();
    output.write_file(
        "ground_truth/regions.json",
        regions_to_json(&regions).into_bytes(),
    )?;
    let cells: Vec<Value> = gt
        .cells
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "kind": c.kind, "center": c.center, "radius_px": c.radius_px, "active": c.active,
                "rate_hz": c.rate_hz, "baseline_photons": c.baseline_photons,
                "visible_fraction": c.visible_fraction, "pixels": c.footprint.pixels.len(),
            })
        })
        .collect();
    output.write_file(
        "ground_truth/cells.json",
        serde_json::to_vec_pretty(&cells)?,
    )?;
    output.write_file(
        "ground_truth/config.json",
        serde_json::to_vec_pretty(config)?,
    )?;
    Ok(())
}
