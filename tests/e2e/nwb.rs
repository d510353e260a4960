//! `tessera export nwb`: a finished run as an NWB file that pynwb opens with the same ROIs, pixel
//! masks, traces, rates and images as the results store and the raw movie copied exactly, and that nwbinspector (DANDI
//! configuration) passes without a critical or best-practice-violation message; a run that is
//! not complete, or something that is not a run, is refused without writing anything; an
//! existing file is kept unless `--overwrite`.

use crate::common::{fails, ok, python};

fn export(run: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "export",
        "nwb",
        run,
        "-o",
        out,
        "--session-start-time",
        "2026-03-01T10:15:00+01:00",
        "--subject-id",
        "mouse-7",
        "--age",
        "P90D",
        "--species",
        "Mus musculus",
        "--sex",
        "F",
        "--location",
        "VISp",
        "--experimenter",
        "Doe, Jane",
        "--lab",
        "Imaging Lab",
        "--institution",
        "Example University",
        "--indicator",
        "GCaMP6s",
        "--pixel-size",
        "1.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_run_exports_to_nwb_that_pynwb_reads_and_nwbinspector_passes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    crate::common::simulate_small(&p("sim.zarr"));
    crate::common::run_two_photon(&p("sim.zarr"), &p("out.run"), &[]);
    let said = ok(&strs(&export(
        &p("out.run"),
        &p("out.nwb"),
        &["--raw", "copy"],
    )));
    assert!(said.contains("ROIs x 300 frames"), "{said}");
    let report: serde_json::Value = serde_json::from_str(&python(
        "check_nwb.py",
        &[&p("out.nwb"), &p("out.run"), &p("sim.zarr")],
    ))
    .unwrap();
    assert!(report["rois"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["frames"], 300);
    assert_eq!(report["subject_id"], "mouse-7");
    assert_eq!(report["session_start_time"], "2026-03-01T10:15:00+01:00");
    assert!(
        report["run_id"].as_str().unwrap().starts_with("run-"),
        "{report}"
    );
    eprintln!("nwbinspector (dandi): {}", report["inspector"]);

    // An existing file is kept unless --overwrite.
    let before = std::fs::read(p("out.nwb")).unwrap();
    let e = fails(&strs(&export(&p("out.run"), &p("out.nwb"), &[])));
    assert!(e.contains("exists: give --overwrite"), "{e}");
    assert!(std::fs::read(p("out.nwb")).unwrap() == before);
    ok(&strs(&export(
        &p("out.run"),
        &p("out.nwb"),
        &["--overwrite"],
    )));

    // A subject needs its species (no default: a wrong one would mislabel the data on DANDI).
    let e = fails(&[
        "export",
        "nwb",
        &p("out.run"),
        "-o",
        &p("nospecies.nwb"),
        "--session-start-time",
        "2026-03-01T10:15:00+01:00",
        "--subject-id",
        "m1",
        "--age",
        "P90D",
    ]);
    assert!(e.contains("give --species"), "{e}");

    // Something that is not a run, and a run that is not complete, are refused; nothing is written.
    let e = fails(&strs(&export(&p("sim.zarr"), &p("sim.nwb"), &[])));
    assert!(e.contains("not the output of a workflow run"), "{e}");
    let root = dir.path().join("out.run/zarr.json");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, text.replace("\"complete\"", "\"incomplete\"")).unwrap();
    let e = fails(&strs(&export(&p("out.run"), &p("partial.nwb"), &[])));
    assert!(
        e.contains("not complete") && e.contains("nothing was written"),
        "{e}"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("nwb") && n != "out.nwb")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
