//! The simulator through the CLI: deterministic output, consistent ground truth, every preset.

use tessera_core::regions_from_json;
use tessera_io::Recording;

use crate::common::ok;

fn movie(path: &std::path::Path) -> ndarray::Array3<u16> {
    let rec = Recording::open(path.to_str().unwrap(), None).unwrap();
    rec.read_box_as::<u16>(&rec.shape().full_box()).unwrap()
}

#[test]
fn same_seed_same_movie_whatever_the_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.zarr");
    let b = dir.path().join("b.zarr");
    let c = dir.path().join("c.zarr");
    let common = [
        "simulate", "--frames", "50", "--height", "48", "--width", "40", "--seed", "9",
    ];
    ok(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    ok(&[
        &common[..],
        &["--out", b.to_str().unwrap(), "--chunks", "7,16,9"],
    ]
    .concat());
    ok(&[
        "simulate",
        "--frames",
        "50",
        "--height",
        "48",
        "--width",
        "40",
        "--seed",
        "10",
        "--out",
        c.to_str().unwrap(),
    ]);
    let (ma, mb, mc) = (movie(&a), movie(&b), movie(&c));
    assert_eq!(ma, mb, "chunking changed the pixels");
    assert_ne!(ma, mc, "a different seed gave the same movie");
    let ga = std::fs::read(a.join("ground_truth/cells.json")).unwrap();
    let gb = std::fs::read(b.join("ground_truth/cells.json")).unwrap();
    assert_eq!(ga, gb);
}

#[test]
fn every_preset_writes_a_readable_recording_with_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    for preset in [
        "base",
        "low-snr",
        "dense",
        "small-cells",
        "large-motion",
        "fast",
        "endoscope",
    ] {
        let out = dir.path().join(format!("{preset}.zarr"));
        ok(&[
            "simulate",
            "--preset",
            preset,
            "--frames",
            "40",
            "--height",
            "64",
            "--width",
            "64",
            "--out",
            out.to_str().unwrap(),
        ]);
        let rec = Recording::open(out.to_str().unwrap(), None).unwrap();
        assert_eq!(rec.shape().to_array(), [40, 64, 64]);
        let meta = rec.meta();
        assert!(meta.frame_rate_hz.unwrap() > 0.0 && meta.pixel_size_um.unwrap() > 0.0);
        let regions = regions_from_json(
            &std::fs::read_to_string(out.join("ground_truth/regions.json")).unwrap(),
        )
        .unwrap();
        let cells: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("ground_truth/cells.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(regions.len(), cells.as_array().unwrap().len(), "{preset}");
        assert!(!regions.is_empty(), "{preset}: no cells");
        for r in &regions {
            assert!(
                r.coordinates.iter().all(|p| p[0] < 64 && p[1] < 64),
                "{preset}: region outside the field"
            );
        }
    }
}

#[test]
fn inspect_reports_metadata_and_plausible_noise() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.zarr");
    ok(&[
        "simulate",
        "--frames",
        "200",
        "--height",
        "64",
        "--width",
        "64",
        "--motion-px",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", out.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["zarr_format"], 3);
    assert_eq!(v["dtype"], "uint16");
    assert_eq!(v["metadata"]["frame_rate_hz"], 30.0);
    assert_eq!(v["metadata"]["indicator"], "GCaMP6s");
    assert!(
        v["codecs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("zstd"))
    );
    // Noise floor: read noise 20 ADU and shot noise of >= ~6 photons x 20 ADU/photon give
    // sqrt(20^2 + 20^2 * 6) ~ 53 ADU at the dimmest pixels; nothing plausible exceeds 1000.
    let noise = v["stats"]["noise_median"].as_f64().unwrap();
    assert!((40.0..1000.0).contains(&noise), "noise {noise}");
    assert_eq!(v["stats"]["saturation_fraction"], 0.0);
    let text = ok(&["inspect", out.to_str().unwrap()]);
    assert!(
        text.contains("frame rate  30 Hz") && text.contains("noise"),
        "{text}"
    );
}

#[test]
fn summary_images_make_simulated_cells_visible() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    let out = dir.path().join("summary.zarr");
    ok(&[
        "simulate",
        "--frames",
        "600",
        "--height",
        "96",
        "--width",
        "96",
        "--seed",
        "2",
        "--motion-px",
        "0",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let stdout = ok(&[
        "summarize",
        sim.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("summarised 600 frames of 96x96"),
        "{stdout}"
    );
    let store =
        tessera_io::Store::open(&tessera_io::Location::parse(out.to_str().unwrap()).unwrap())
            .unwrap();
    let corr = store
        .read_array::<f32>("summary/correlation")
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let pnr = store
        .read_array::<f32>("summary/pnr")
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let cells: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sim.join("ground_truth/cells.json")).unwrap(),
    )
    .unwrap();
    let regions =
        regions_from_json(&std::fs::read_to_string(sim.join("ground_truth/regions.json")).unwrap())
            .unwrap();
    let mut on_cell = vec![false; 96 * 96];
    for r in &regions {
        for p in &r.coordinates {
            on_cell[p[0] as usize * 96 + p[1] as usize] = true;
        }
    }
    let background: Vec<f32> = corr
        .iter()
        .zip(&on_cell)
        .filter(|(_, c)| !**c)
        .map(|(v, _)| *v)
        .collect();
    let bg_mean = background.iter().sum::<f32>() / background.len() as f32;
    // Active cells that fired: their pixels correlate clearly above the background.
    let mut visible = 0;
    let mut active = 0;
    for (cell, region) in cells.as_array().unwrap().iter().zip(&regions) {
        if !cell["active"].as_bool().unwrap() || cell["rate_hz"].as_f64().unwrap() < 0.2 {
            continue;
        }
        active += 1;
        let m = region
            .coordinates
            .iter()
            .map(|p| corr[[p[0] as usize, p[1] as usize]])
            .sum::<f32>()
            / region.coordinates.len() as f32;
        if m > bg_mean + 0.1 {
            visible += 1;
        }
    }
    assert!(active >= 3, "too few active cells ({active})");
    assert!(
        visible * 10 >= active * 8,
        "{visible} of {active} active cells stand out in the correlation image"
    );
    assert!(pnr.iter().all(|v| v.is_finite() && *v >= 0.0));
}
