//! `tessera extract --tile-size`: the field cut into tiles with halos, ROIs merged across tile
//! edges, traces refit globally. The tiled result must match the untiled one (ARCHITECTURE.md,
//! "Merging across tiles"); thresholds are recorded in docs/ACCURACY.md.

use std::collections::{BTreeSet, HashMap};

use tessera_io::{Location, Store};

use crate::common::{evaluate, ok, score};

/// Accepted ROIs of an extraction: (support pixels with weight >= 0.2, centroid, trace).
fn rois(path: &str) -> Vec<(BTreeSet<u32>, [f64; 2], Vec<f32>)> {
    let store = Store::open(&Location::parse(path).unwrap()).unwrap();
    let cell = store.read_array::<u32>("rois/footprints/cell").unwrap();
    let pixel = store.read_array::<u32>("rois/footprints/pixel").unwrap();
    let weight = store.read_array::<f32>("rois/footprints/weight").unwrap();
    let traces = store.read_array::<f32>("rois/traces").unwrap();
    let accepted = store.read_array::<u8>("rois/accepted").unwrap();
    let qc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{path}/rois/qc.json")).unwrap()).unwrap();
    let mut support: HashMap<u32, BTreeSet<u32>> = HashMap::new();
    for ((&c, &p), &w) in cell.iter().zip(pixel.iter()).zip(weight.iter()) {
        if w >= 0.2 {
            support.entry(c).or_default().insert(p);
        }
    }
    let t = traces.shape()[1];
    (0..accepted.len())
        .filter(|&i| accepted[i] == 1)
        .map(|i| {
            let c = &qc[i]["centroid"];
            (
                support.remove(&(i as u32)).unwrap_or_default(),
                [c[0].as_f64().unwrap(), c[1].as_f64().unwrap()],
                traces.iter().skip(i * t).take(t).copied().collect(),
            )
        })
        .collect()
}

fn iou(a: &BTreeSet<u32>, b: &BTreeSet<u32>) -> f64 {
    let common = a.intersection(b).count();
    common as f64 / (a.len() + b.len() - common).max(1) as f64
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
        b.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt().max(f64::MIN_POSITIVE)
}

fn f1(sim: &str, est: &str) -> f64 {
    score(&evaluate(sim, est), "iou50")["f1"].as_f64().unwrap()
}

#[test]
fn tiled_extraction_matches_the_untiled_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--frames",
        "1000",
        "--height",
        "192",
        "--width",
        "192",
        "--seed",
        "5",
        "--motion-px",
        "0",
        "--out",
        &p("sim.zarr"),
    ]);
    ok(&["extract", &p("sim.zarr"), "--out", &p("whole.zarr")]);
    // 64-px cores: 9 tiles, 4 edges crossing the field.
    let stdout = ok(&[
        "extract",
        &p("sim.zarr"),
        "--out",
        &p("tiled.zarr"),
        "--tile-size",
        "64",
    ]);
    assert!(stdout.contains("extracted"), "{stdout}");
    let (fw, ft) = (
        f1(&p("sim.zarr"), &p("whole.zarr")),
        f1(&p("sim.zarr"), &p("tiled.zarr")),
    );
    eprintln!("IoU>=0.5 F1: untiled {fw:.3}, tiled {ft:.3}");
    assert!((fw - ft).abs() <= 0.01, "untiled {fw} vs tiled {ft}");

    let (whole, tiled) = (rois(&p("whole.zarr")), rois(&p("tiled.zarr")));
    // No duplicates: no two tiled ROIs with IoU > 0.5.
    for (i, a) in tiled.iter().enumerate() {
        for b in &tiled[i + 1..] {
            assert!(
                iou(&a.0, &b.0) <= 0.5,
                "duplicate ROIs at {:?} and {:?}",
                a.1,
                b.1
            );
        }
    }
    // ROIs within a halo (12 px) of a tile edge: traces match the untiled run's.
    let mut rs = Vec::new();
    for a in &tiled {
        let near = [64.0, 128.0]
            .iter()
            .any(|&e| (a.1[0] - e).abs() <= 12.0 || (a.1[1] - e).abs() <= 12.0);
        let best = whole
            .iter()
            .max_by(|x, y| iou(&a.0, &x.0).total_cmp(&iou(&a.0, &y.0)));
        if let Some(b) = best.filter(|b| near && iou(&a.0, &b.0) >= 0.5) {
            rs.push(pearson(&a.2, &b.2));
        }
    }
    rs.sort_by(f64::total_cmp);
    eprintln!("boundary ROIs: {} with trace r {rs:.4?}", rs.len());
    assert!(rs.len() >= 5, "only {} boundary ROIs matched", rs.len());
    // Both paths end with the same global refit, so matched footprints give matching traces.
    assert!(rs[0] >= 0.99, "lowest r {}", rs[0]);

    // Memory bounded: the movie is 147 MB as float32. With a budget of 120 MB the planner cuts
    // tiles that hold all frames, each read from the store on its own, and the refit and QC stream
    // over runs of frames: the process stays within the budget (its own report of its peak
    // resident memory) and scores as the untiled run does. With 80 MB even the smallest tile
    // cannot hold all 1000 frames, so the tiles' movies average pairs of frames (the refit still
    // runs at the full rate); binning costs about one cell of 23 here (docs/ACCURACY.md).
    let budgeted = |budget: &str, name: &str| -> (f64, f64, serde_json::Value) {
        let stdout = ok(&[
            "extract",
            &p("sim.zarr"),
            "--out",
            &p(name),
            "--memory-budget",
            budget,
        ]);
        let peak_mb: f64 = stdout
            .split("peak memory ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no peak memory in {stdout}"));
        let root: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{}/zarr.json", p(name))).unwrap())
                .unwrap();
        let tiling = root["attributes"]["tessera"]["tiling"].clone();
        let f = f1(&p("sim.zarr"), &p(name));
        eprintln!(
            "{budget} budget: peak {peak_mb} MB, IoU>=0.5 F1 {f:.3} (untiled {fw:.3}), {tiling}"
        );
        (peak_mb, f, tiling)
    };
    let (peak, fb, tiling) = budgeted("120MB", "budget120.zarr");
    assert!(
        peak <= 120.0,
        "peak memory {peak} MB over the 120 MB budget"
    );
    assert!((fb - fw).abs() <= 0.01, "budgeted F1 {fb} vs untiled {fw}");
    assert!(tiling["tiles"].as_u64().unwrap() > 1, "{tiling}");
    assert!(
        tiling["frames_per_run"].as_u64().unwrap() < 1000,
        "{tiling}"
    );
    assert_eq!(tiling["tile_bin_frames"], 1, "{tiling}");
    let (peak, fb, tiling) = budgeted("80MB", "budget80.zarr");
    assert!(peak <= 80.0, "peak memory {peak} MB over the 80 MB budget");
    assert!(tiling["tile_bin_frames"].as_u64().unwrap() >= 2, "{tiling}");
    assert!(fb >= fw - 0.06, "binned tiles: F1 {fb} vs untiled {fw}");
    // A budget below what the field's images and traces need is refused before any work.
    let err = crate::common::fails(&[
        "extract",
        &p("sim.zarr"),
        "--out",
        &p("tiny.zarr"),
        "--memory-budget",
        "10MB",
    ]);
    assert!(err.contains("leaves nothing for tiles"), "{err}");
}

#[test]
fn a_dendrite_crossing_several_tiles_comes_out_as_one_roi() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--preset",
        "dendrites",
        "--frames",
        "1000",
        "--height",
        "160",
        "--width",
        "160",
        "--seed",
        "4",
        "--motion-px",
        "0",
        "--set",
        "dendrite_density_per_mm2=150",
        "--out",
        &p("sim.zarr"),
    ]);
    // 40-px cores: 16 tiles; the 150-um segments cross three or more.
    ok(&[
        "extract",
        &p("sim.zarr"),
        "--out",
        &p("tiled.zarr"),
        "--morphology",
        "any",
        "--tile-size",
        "40",
    ]);
    let tiled = rois(&p("tiled.zarr"));
    let store = Store::open(&Location::parse(&p("sim.zarr")).unwrap()).unwrap();
    let cells: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("sim.zarr/ground_truth/cells.json")).unwrap())
            .unwrap();
    let cell = store
        .read_array::<u32>("ground_truth/footprints/cell")
        .unwrap();
    let pixel = store
        .read_array::<u32>("ground_truth/footprints/pixel")
        .unwrap();
    let weight = store
        .read_array::<f32>("ground_truth/footprints/weight")
        .unwrap();
    let mut checked = 0;
    for c in cells.as_array().unwrap() {
        if c["kind"] != "dendrite" || c["visible_fraction"].as_f64().unwrap() < 0.5 {
            continue;
        }
        let id = c["id"].as_u64().unwrap() as u32;
        let truth: BTreeSet<u32> = cell
            .iter()
            .zip(pixel.iter())
            .zip(weight.iter())
            .filter(|((k, _), w)| **k == id && **w >= 0.2)
            .map(|((_, &p), _)| p)
            .collect();
        let tiles: BTreeSet<(u32, u32)> = truth
            .iter()
            .map(|&p| (p / 160 / 40, p % 160 / 40))
            .collect();
        if tiles.len() < 3 {
            continue;
        }
        checked += 1;
        // One ROI outlines it; no second ROI holds a sizeable piece of it.
        let overlaps: Vec<f64> = tiled.iter().map(|r| iou(&truth, &r.0)).collect();
        let best = overlaps.iter().copied().fold(0.0, f64::max);
        let pieces = tiled
            .iter()
            .filter(|r| {
                r.0.intersection(&truth).count() * 2 > r.0.len() && iou(&truth, &r.0) < best
            })
            .count();
        eprintln!(
            "dendrite {id}: {} tiles, best IoU {best:.2}, other pieces {pieces}",
            tiles.len()
        );
        assert!(
            best >= 0.5,
            "dendrite {id} across {} tiles: best IoU {best}",
            tiles.len()
        );
        assert_eq!(pieces, 0, "dendrite {id} split into pieces");
    }
    assert!(checked >= 3, "only {checked} dendrites cross three tiles");
}
