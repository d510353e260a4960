//! `tessera extract` scored by `tessera evaluate`: simulated ground truth and real labels.
//! Thresholds are recorded in docs/ACCURACY.md.

use crate::common::{evaluate, ok, score, shared_data};

#[test]
fn extraction_finds_simulated_cells() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    let out = dir.path().join("rois.zarr");
    ok(&[
        "simulate",
        "--frames",
        "800",
        "--height",
        "128",
        "--width",
        "128",
        "--seed",
        "4",
        "--density",
        "1600",
        "--motion-px",
        "0",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let stdout = ok(&[
        "extract",
        sim.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("extracted"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        sim.to_str().unwrap(),
        "--estimate",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let iou = score(&report, "iou50");
    let (f1, precision) = (
        iou["f1"].as_f64().unwrap(),
        iou["precision"].as_f64().unwrap(),
    );
    eprintln!(
        "simulated: F1 {f1:.3}, precision {precision:.3}, matched-trace r {}",
        report["matched_trace_correlation"]
    );
    // Scored against the detectable cells (at least half in the field, firing at least once).
    assert!(f1 >= 0.85, "IoU>=0.5 F1 {f1}");
    assert!(precision >= 0.9, "precision {precision}");
    assert!(report["matched_trace_correlation"].as_f64().unwrap() >= 0.9);
    // dF/F of accepted cells is finite and mostly near 0 with positive transients.
    let store =
        tessera_io::Store::open(&tessera_io::Location::parse(out.to_str().unwrap()).unwrap())
            .unwrap();
    let dff = store.read_array::<f32>("rois/dff").unwrap();
    assert!(dff.iter().all(|v| v.is_finite()));
    // The output is complete and self-consistent.
    let qc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rois/qc.json")).unwrap()).unwrap();
    let accepted = qc
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["accepted"] == true)
        .count();
    let regions = tessera_core::regions_from_json(
        &std::fs::read_to_string(out.join("rois/regions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(regions.len(), accepted);
    // Estimates on don't-care cells (cut by the border, or silent) leave the count.
    assert_eq!(
        (iou["n_estimate"].as_u64().unwrap() + iou["ignored_estimates"].as_u64().unwrap()) as usize,
        accepted
    );
}

#[test]
fn extraction_on_the_real_neurofinder_clip() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("nf.zarr");
    let out = dir.path().join("rois.zarr");
    ok(&[
        "ingest",
        shared_data()
            .join("neurofinder.01.01/images")
            .to_str()
            .unwrap(),
        "--out",
        rec.to_str().unwrap(),
    ]);
    ok(&[
        "extract",
        rec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let labels = shared_data().join("neurofinder.01.01/regions/regions.json");
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        labels.to_str().unwrap(),
        "--estimate",
        out.join("rois/regions.json").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let nf = score(&report, "neurofinder");
    eprintln!(
        "neurofinder.01.01 (101 frames): TP {}, recall {:.3}, precision {:.3}",
        nf["true_positives"], nf["recall"], nf["precision"]
    );
    // A regression guard on real data: most labelled cells are silent in this 13 s clip, so recall is
    // bounded far below 1; the measured baseline is 32 matches at precision 0.48.
    assert!(nf["true_positives"].as_u64().unwrap() >= 25);
    assert!(nf["precision"].as_f64().unwrap() >= 0.35);
}

/// The simulator presets through the whole chain, 256 x 256 px, 1500 frames at 30 Hz, seed 1, both
/// ways: `register` then `extract` (simulate -> register -> extract -> evaluate), and `extract
/// --register`, which registers in memory. tessera's defaults except the registration's search
/// limit on the large-motion preset (its jumps reach 17 px; the default limit is 15 px and the
/// command warns). F1 in the IoU >= 0.5 convention against the detectable cells; the floors are the
/// issue's targets where we meet them (base 0.95, large motion 0.90; measured 0.965 and 0.916 on
/// 2026-11-29 in two steps, 0.976 and 0.951 in one) and sit a little under the measured figures
/// elsewhere (docs/ACCURACY.md); seed 2 meets them within 0.05. In one step, the large-motion
/// shifts written to `registration/shifts` also match the simulated motion.
#[test]
fn simulator_presets_meet_their_accuracy_floors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, f64, &[&str]); 5] = [
        ("base", 0.95, &[]),
        ("low-snr", 0.88, &[]),
        ("small-cells", 0.85, &[]),
        ("dense", 0.85, &[]),
        ("large-motion", 0.90, &["--max-shift", "24"]),
    ];
    let mut failures = Vec::new();
    for (preset, floor, register_args) in cases {
        let d = dir.path().join(preset);
        let (sim, reg, rois) = (d.join("sim.zarr"), d.join("reg.zarr"), d.join("rois.zarr"));
        let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        ok(&[
            "simulate",
            "--preset",
            preset,
            "--frames",
            "1500",
            "--height",
            "256",
            "--width",
            "256",
            "--seed",
            "1",
            "--out",
            &s(&sim),
        ]);
        let mut args = vec!["register".to_owned(), s(&sim), "--out".into(), s(&reg)];
        args.extend(register_args.iter().map(|a| a.to_string()));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        ok(&["extract", &s(&reg), "--out", &s(&rois)]);
        let fused = d.join("rois-fused.zarr");
        let mut args = vec![
            "extract".to_owned(),
            s(&sim),
            "--register".into(),
            "--out".into(),
            s(&fused),
        ];
        args.extend(register_args.iter().map(|a| a.to_string()));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for (how, out) in [("two steps", &rois), ("extract --register", &fused)] {
            let report: serde_json::Value = serde_json::from_str(&ok(&[
                "evaluate",
                "--truth",
                &s(&sim),
                "--estimate",
                &s(out),
                "--json",
            ]))
            .unwrap();
            let iou = score(&report, "iou50");
            let f1 = iou["f1"].as_f64().unwrap();
            eprintln!(
                "{preset} ({how}): F1 {f1:.3} (recall {:.3}, precision {:.3}), matched-trace r {:.3}, floor {floor}",
                iou["recall"].as_f64().unwrap(),
                iou["precision"].as_f64().unwrap(),
                report["matched_trace_correlation"].as_f64().unwrap_or(0.0)
            );
            if f1 < floor {
                failures.push(format!("{preset} ({how}): F1 {f1:.3} < {floor}"));
            }
            if preset == "base" {
                let r = report["matched_trace_correlation"].as_f64().unwrap();
                if r < 0.95 {
                    failures.push(format!("base ({how}): matched-trace r {r:.3} < 0.95"));
                }
            }
        }
        if preset == "large-motion" {
            let open = |p: &std::path::Path| {
                tessera_io::Store::open(&tessera_io::Location::parse(&s(p)).unwrap()).unwrap()
            };
            let read = |p: &std::path::Path, a: &str| {
                open(p)
                    .read_array::<f32>(a)
                    .unwrap()
                    .into_dimensionality::<ndarray::Ix2>()
                    .unwrap()
            };
            let (truth, est) = (
                read(&sim, "ground_truth/motion"),
                read(&fused, "registration/shifts"),
            );
            assert_eq!(est.dim(), truth.dim());
            let n = est.nrows();
            for axis in 0..2 {
                let mut d: Vec<f64> = (0..n)
                    .map(|t| f64::from(est[[t, axis]] - truth[[t, axis]]))
                    .collect();
                let mean = d.iter().sum::<f64>() / n as f64;
                let rms = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
                d.sort_by(f64::total_cmp);
                let median = d[n / 2];
                eprintln!(
                    "large-motion (extract --register): axis {axis} rms {rms:.3} px, offset {median:.3} px"
                );
                // The 0.2 px; and the registered frame is the recording's own.
                if rms >= 0.2 || median.abs() >= 0.3 {
                    failures.push(format!(
                        "large-motion shifts, axis {axis}: rms {rms:.3} px, offset {median:.3} px"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// `extract --register` holds the whole movie: it refuses the tiled modes, and a movie that
/// `tessera register` already registered, each with the way out.
#[test]
fn extract_register_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, reg) = (dir.path().join("sim.zarr"), dir.path().join("reg.zarr"));
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    crate::common::simulate_small(&s(&sim));
    ok(&["register", &s(&sim), "--out", &s(&reg)]);
    let out = s(&dir.path().join("rois.zarr"));
    let e = crate::common::fails(&[
        "extract",
        &s(&sim),
        "--register",
        "--tile-size",
        "64",
        "--out",
        &out,
    ]);
    assert!(
        e.contains("--register") && e.contains("tessera register"),
        "{e}"
    );
    let e = crate::common::fails(&["extract", &s(&reg), "--register", "--out", &out]);
    assert!(
        e.contains("already registered") && e.contains("drop --register"),
        "{e}"
    );
    // The registration's own options without it are a usage error (clap's exit status 2).
    let o = crate::common::run(&["extract", &s(&sim), "--max-shift", "4", "--out", &out]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && e.contains("--register"),
        "{e}"
    );
    assert!(!dir.path().join("rois.zarr").join("zarr.json").exists());
}

#[test]
fn without_a_shape_prior_extract_outlines_dendrites() {
    // The `dendrites` preset: somata and 150-um dendritic segments with their own activity. With
    // `--morphology any` the segments come out whole; the soma prior cuts them into soma-sized
    // pieces (false positives, misses). Thresholds in docs/ACCURACY.md.
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
        "3",
        "--motion-px",
        "0",
        "--set",
        "dendrite_density_per_mm2=150",
        "--out",
        &p("sim.zarr"),
    ]);
    let f1 = |morphology: &str| {
        let out = p(&format!("{morphology}.zarr"));
        ok(&[
            "extract",
            &p("sim.zarr"),
            "--out",
            &out,
            "--morphology",
            morphology,
        ]);
        score(&evaluate(&p("sim.zarr"), &out), "iou50")["f1"]
            .as_f64()
            .unwrap()
    };
    let (any, soma) = (f1("any"), f1("soma"));
    eprintln!("dendrites preset: F1 {any:.3} without a shape prior, {soma:.3} with the soma prior");
    assert!(any >= 0.75, "F1 {any} without a shape prior");
    assert!(any >= soma + 0.15, "F1 {any} vs soma prior {soma}");
}
