//! `tessera report`: one self-contained HTML page whose figures are valid PNGs, which headless
//! Chromium (Debian's chromium) loads with every image decoded and the ROI count of the results
//! store shown; every run writes one as `run/report.html`; incomplete runs are refused; an
//! existing file is kept unless `--overwrite`.

use crate::common::{fails, ok, python};

#[test]
fn the_report_renders_in_chromium_with_every_image_and_the_stores_roi_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    crate::common::simulate_small(&p("sim.zarr"));
    crate::common::run_two_photon(&p("sim.zarr"), &p("out.run"), &[]);
    let said = ok(&["report", &p("out.run"), "-o", &p("report.html")]);
    assert!(said.contains("5 figures"), "{said}");
    let report: serde_json::Value = serde_json::from_str(&python(
        "check_report.py",
        &[&p("report.html"), &p("screenshot.png")],
    ))
    .unwrap();
    // Mean and correlation images, traces, shifts and QC histograms.
    assert_eq!(report["images"], 5, "{report}");
    let store =
        tessera_io::Store::open(&tessera_io::Location::parse(&p("out.run")).unwrap()).unwrap();
    let accepted = store.read_array::<u8>("rois/accepted").unwrap();
    assert!(accepted.len() >= 3);
    assert_eq!(report["roi_count"], accepted.len());
    assert_eq!(
        report["accepted_count"],
        accepted.iter().filter(|&&a| a == 1).count()
    );
    assert!(
        std::fs::metadata(p("screenshot.png")).unwrap().len() > 10_000,
        "screenshot too small"
    );
    // Every run writes its own report when it publishes, and it passes the same checks.
    let own: serde_json::Value =
        serde_json::from_str(&python("check_report.py", &[&p("out.run/run/report.html")])).unwrap();
    assert_eq!(own["images"], 5, "{own}");
    assert_eq!(own["roi_count"], accepted.len());

    // With the ground truth: matched, missed and false ROIs drawn, with tessera evaluate's
    // figures (IoU >= 0.5, Hungarian, detectable cells).
    let said = ok(&[
        "report",
        &p("out.run"),
        "-o",
        &p("truth.html"),
        "--truth",
        &p("sim.zarr"),
    ]);
    assert!(said.contains("6 figures"), "{said}");
    let html = std::fs::read_to_string(p("truth.html")).unwrap();
    let shown = |id: &str| -> String {
        let at = html
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no {id}"));
        html[at..]
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_string()
    };
    let scores = crate::common::evaluate(&p("sim.zarr"), &p("out.run"));
    let iou = crate::common::score(&scores, "iou50");
    assert_eq!(shown("matched-count"), iou["true_positives"].to_string());
    assert_eq!(shown("f1"), format!("{:.3}", iou["f1"].as_f64().unwrap()));
    let missed: u64 = shown("missed-count").parse().unwrap();
    let false_rois: u64 = shown("false-count").parse().unwrap();
    assert_eq!(
        iou["true_positives"].as_u64().unwrap() + missed,
        iou["n_truth"].as_u64().unwrap()
    );
    assert_eq!(
        iou["true_positives"].as_u64().unwrap() + false_rois,
        iou["n_estimate"].as_u64().unwrap()
    );
    let checked: serde_json::Value =
        serde_json::from_str(&python("check_report.py", &[&p("truth.html")])).unwrap();
    assert_eq!(checked["images"], 6, "{checked}");

    // An existing file is kept; a run that is not complete is refused.
    let e = fails(&["report", &p("out.run"), "-o", &p("report.html")]);
    assert!(e.contains("give --overwrite"), "{e}");
    let root = dir.path().join("out.run/zarr.json");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, text.replace("\"complete\"", "\"incomplete\"")).unwrap();
    let e = fails(&["report", &p("out.run"), "-o", &p("partial.html")]);
    assert!(e.contains("not complete"), "{e}");
    assert!(!dir.path().join("partial.html").exists());
}
