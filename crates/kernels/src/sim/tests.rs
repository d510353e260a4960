use super::*;

fn small(preset: &str) -> SimConfig {
    let mut c = SimConfig::preset(preset).unwrap();
    c.frames = 300;
    c.height = 96;
    c.width = 96;
    c.seed = 11;
    c
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn every_preset_builds_and_validates() {
    for p in PRESETS {
        let sim = Simulation::new(small(p)).unwrap();
        let gt = sim.ground_truth();
        assert!(!gt.cells.is_empty(), "preset {p} has no cells");
        assert_eq!(gt.fluorescence.dim(), (gt.cells.len(), 300));
    }
    assert!(SimConfig::preset("nope").is_err());
}

#[test]
fn rendering_is_deterministic_and_independent_of_chunking() {
    let sim = Simulation::new(small("base")).unwrap();
    let whole = sim.render(0, 40);
    let a = sim.render(0, 17);
    let b = sim.render(17, 40);
    assert_eq!(whole.slice(ndarray::s![..17, .., ..]), a);
    assert_eq!(whole.slice(ndarray::s![17.., .., ..]), b);
    let again = Simulation::new(small("base")).unwrap().render(0, 40);
    assert_eq!(whole, again);
    let mut other = small("base");
    other.seed = 12;
    assert_ne!(Simulation::new(other).unwrap().render(0, 40), whole);
}

#[test]
fn ground_truth_traces_explain_the_movie() {
    // Without motion, the footprint-weighted average of the movie over each active cell must follow
    // the cell's true fluorescence: the movie and its ground truth describe the same cells.
    let mut c = small("base");
    c.motion_rms_px = 0.0;
    c.frames = 400;
    let sim = Simulation::new(c).unwrap();
    let gt = sim.ground_truth();
    let movie = sim.render(0, 400);
    let mut correlations = Vec::new();
    for cell in gt.cells.iter().filter(|c| c.active) {
        let truth: Vec<f64> = gt
            .fluorescence
            .row(cell.id)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        if truth.iter().cloned().fold(f64::MIN, f64::max) - truth[0] < 1.0 {
            continue; // did not fire in this short clip
        }
        let w = 96;
        let trace: Vec<f64> = (0..400)
            .map(|t| {
                cell.footprint
                    .pixels
                    .iter()
                    .zip(&cell.footprint.weights)
                    .map(|(&p, &wt)| {
                        f64::from(wt) * f64::from(movie[[t, p as usize / w, p as usize % w]])
                    })
                    .sum::<f64>()
            })
            .collect();
        correlations.push(pearson(&trace, &truth));
    }
    assert!(
        correlations.len() >= 5,
        "too few active cells: {}",
        correlations.len()
    );
    correlations.sort_by(f64::total_cmp);
    let median = correlations[correlations.len() / 2];
    assert!(
        median > 0.8,
        "median correlation {median} ({correlations:?})"
    );
}

#[test]
fn motion_is_within_the_margin_and_large_for_large_motion() {
    let sim = Simulation::new(small("large-motion")).unwrap();
    let gt = sim.ground_truth();
    let rms = (gt.motion.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
        / gt.motion.len() as f64)
        .sqrt();
    assert!(rms > 1.5, "rms motion {rms}");
    let limit = sim.config().margin_px() as f32;
    assert!(gt.motion.iter().all(|v| v.abs() < limit));
    let still = {
        let mut c = small("base");
        c.motion_rms_px = 0.0;
        Simulation::new(c).unwrap().ground_truth()
    };
    assert!(still.motion.iter().all(|&v| v == 0.0));
}

#[test]
fn silent_cells_never_spike_and_active_cells_do() {
    let mut c = small("base");
    c.frames = 3000;
    let gt = Simulation::new(c).unwrap().ground_truth();
    let silent: Vec<_> = gt.cells.iter().filter(|c| !c.active).collect();
    assert!(!silent.is_empty());
    for cell in silent {
        assert_eq!(
            gt.spikes
                .row(cell.id)
                .iter()
                .map(|&s| u32::from(s))
                .sum::<u32>(),
            0
        );
    }
    let total: u64 = gt.spikes.iter().map(|&s| u64::from(s)).sum();
    assert!(total > 50, "{total} spikes");
}

#[test]
fn dense_preset_overlaps_and_small_cells_are_small() {
    let dense = Simulation::new(small("dense")).unwrap().ground_truth();
    let base = Simulation::new(small("base")).unwrap().ground_truth();
    assert!(dense.cells.len() > 2 * base.cells.len() - 2);
    let mut hits = std::collections::HashMap::<u32, u32>::new();
    for cell in &dense.cells {
        for (&p, &w) in cell.footprint.pixels.iter().zip(&cell.footprint.weights) {
            if w > REGION_THRESHOLD {
                *hits.entry(p).or_default() += 1;
            }
        }
    }
    assert!(
        hits.values().any(|&n| n > 1),
        "no overlapping somata in the dense preset"
    );
    let small_cells = Simulation::new(small("small-cells"))
        .unwrap()
        .ground_truth();
    let mean_r =
        small_cells.cells.iter().map(|c| c.radius_px).sum::<f64>() / small_cells.cells.len() as f64;
    assert!(mean_r < 3.5, "small-cells radius {mean_r}");
}

#[test]
fn bad_parameters_name_the_parameter() {
    let mut c = small("base");
    c.frame_rate_hz = -1.0;
    let e = Simulation::new(c).unwrap_err().to_string();
    assert!(e.contains("frame_rate_hz"), "{e}");
    let mut c = small("base");
    c.silent_fraction = 1.5;
    assert!(
        Simulation::new(c)
            .unwrap_err()
            .to_string()
            .contains("silent_fraction")
    );
}
