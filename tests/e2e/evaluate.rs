//! `tessera evaluate` on real labels and on simulations.

use crate::common::{fails, ok, shared_data};

#[test]
fn real_labels_against_themselves_and_a_damaged_copy() {
    let regions = shared_data().join("neurofinder.01.01/regions/regions.json");
    let r = regions.to_str().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["evaluate", "--truth", r, "--estimate", r, "--json"])).unwrap();
    for s in v["scores"].as_array().unwrap() {
        assert_eq!(s["true_positives"], 350, "{}", s["convention"]);
        assert_eq!(s["f1"], 1.0);
    }
    // Drop every 5th region and add one far from any cell: TP 280 of 350, 281 estimates.
    let text = std::fs::read_to_string(&regions).unwrap();
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut kept: Vec<serde_json::Value> = all
        .drain(..)
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, r)| r)
        .collect();
    kept.push(serde_json::json!({"coordinates": [[0, 0], [0, 1], [1, 0], [1, 1]]}));
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.json");
    std::fs::write(&damaged, serde_json::to_string(&kept).unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        r,
        "--estimate",
        damaged.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    for s in v["scores"].as_array().unwrap() {
        assert_eq!(s["true_positives"], 280, "{}", s["convention"]);
        assert_eq!(s["n_estimate"], 281);
        let recall = s["recall"].as_f64().unwrap();
        assert!((recall - 0.8).abs() < 1e-12);
    }
    let text = ok(&[
        "evaluate",
        "--truth",
        r,
        "--estimate",
        damaged.to_str().unwrap(),
    ]);
    assert!(
        text.contains("neurofinder") && text.contains("iou50") && text.contains("inclusion"),
        "{text}"
    );
}

#[test]
fn simulation_truth_scores_with_traces() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    ok(&[
        "simulate",
        "--frames",
        "300",
        "--height",
        "96",
        "--width",
        "96",
        "--seed",
        "4",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let s = sim.to_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        s,
        "--estimate",
        s,
        "--truth-cells",
        "all",
        "--json",
    ]))
    .unwrap();
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(
        scores.len(),
        4,
        "the trace convention runs when both sides have traces"
    );
    // Silent cells have flat traces (correlation 0), so the trace convention finds only active ones.
    let cells: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sim.join("ground_truth/cells.json")).unwrap(),
    )
    .unwrap();
    let n = cells.as_array().unwrap().len();
    for s in &scores[..3] {
        assert_eq!(s["true_positives"].as_u64().unwrap() as usize, n);
    }
    assert!(scores[3]["true_positives"].as_u64().unwrap() as usize <= n);
    // Regions JSON of the simulation against its footprints: the same cells.
    let regions = sim.join("ground_truth/regions.json");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        s,
        "--estimate",
        regions.to_str().unwrap(),
        "--truth-cells",
        "all",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        v["scores"][2]["true_positives"].as_u64().unwrap() as usize,
        n
    );
    // By default only detectable cells count (at least half in the field, firing at least once);
    // the others are don't care, and the estimates matching them are not false positives.
    let spikes = tessera_io::Store::open(&tessera_io::Location::parse(s).unwrap())
        .unwrap()
        .read_array::<u8>("ground_truth/spikes")
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let detectable = cells
        .as_array()
        .unwrap()
        .iter()
        .zip(spikes.rows())
        .filter(|(c, sp)| {
            c["visible_fraction"].as_f64().unwrap() >= 0.5 && sp.iter().any(|&k| k > 0)
        })
        .count();
    assert!(detectable > 0 && detectable < n, "{detectable} of {n}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["evaluate", "--truth", s, "--estimate", s, "--json"])).unwrap();
    assert_eq!(v["truth_cells"], "detectable");
    for sc in v["scores"].as_array().unwrap().iter().take(3) {
        assert_eq!(sc["n_truth"].as_u64().unwrap() as usize, detectable);
        assert_eq!(sc["true_positives"].as_u64().unwrap() as usize, detectable);
        assert_eq!(sc["n_estimate"].as_u64().unwrap() as usize, detectable);
        assert_eq!(sc["f1"].as_f64().unwrap(), 1.0);
        assert_eq!(
            sc["ignored_truth"].as_u64().unwrap() as usize,
            n - detectable
        );
    }
    let e = fails(&[
        "evaluate",
        "--truth",
        s,
        "--estimate",
        dir.path().join("nope.json").to_str().unwrap(),
    ]);
    assert!(e.contains("nope.json"), "{e}");
}
