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

/// The two-photon example workflow with an `outputs.nwb` section.
fn workflow_with_nwb(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(crate::common::example("two-photon.yaml")).unwrap();
    let text = format!(
        "{text}outputs:\n  nwb:\n    file: sub-mouse-7_ses-1_ophys.nwb\n    \
         session_start_time: \"2026-03-01T10:15:00+01:00\"\n    experimenter: [\"Doe, Jane\"]\n    \
         lab: Imaging Lab\n    institution: Example University\n    \
         subject: {{subject_id: mouse-7, species: Mus musculus, sex: F, age: P90D}}\n    \
         indicator: GCaMP6s\n    location: VISp\n    pixel_size_um: 1.1\n    raw: copy\n"
    );
    let path = dir.join("with-nwb.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_workflow_with_outputs_nwb_writes_the_file_when_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    crate::common::simulate_small(&p("sim.zarr"));
    let workflow = workflow_with_nwb(dir.path());
    let args = [
        "run",
        &workflow,
        "--input",
        &p("sim.zarr"),
        "--output",
        &p("out.run"),
        "--tile-size",
        "32",
    ];
    ok(&args);
    let file = p("out.run/sub-mouse-7_ses-1_ophys.nwb");
    let report: serde_json::Value = serde_json::from_str(&python(
        "check_nwb.py",
        &[&file, &p("out.run"), &p("sim.zarr")],
    ))
    .unwrap();
    assert_eq!(report["frames"], 300);
    assert_eq!(report["subject_id"], "mouse-7");
    eprintln!("nwbinspector (dandi): {}", report["inspector"]);
    // The run's record names the file, the RO-Crate lists it and the manifest digests it.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out.run/provenance/record.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["nwb"]["file"], "sub-mouse-7_ses-1_ophys.nwb");
    assert_eq!(record["nwb"]["rois"], report["rois"]);
    let manifest = std::fs::read_to_string(dir.path().join("out.run/provenance/manifest.json"))
        .unwrap_or_default();
    assert!(
        manifest.contains("sub-mouse-7_ses-1_ophys.nwb"),
        "not in the manifest"
    );
    let crate_json =
        std::fs::read_to_string(dir.path().join("out.run/ro-crate-metadata.json")).unwrap();
    assert!(crate_json.contains("application/x-nwb"), "{crate_json}");
    // Nothing half-written is left beside it.
    let hidden: Vec<String> = std::fs::read_dir(dir.path().join("out.run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Metadata an NWB file cannot carry is refused when the workflow is read, before any task.
    let text = std::fs::read_to_string(&workflow).unwrap();
    let bad = text.replace("2026-03-01T10:15:00+01:00", "2026-03-01 10:15");
    let bad = bad.replace("species: Mus musculus, ", "");
    std::fs::write(p("bad.yaml"), bad).unwrap();
    let e = fails(&[
        "run",
        &p("bad.yaml"),
        "--input",
        &p("sim.zarr"),
        "--output",
        &p("bad.run"),
    ]);
    assert!(
        e.contains("bad.yaml:")
            && e.contains("outputs.nwb.session_start_time")
            && e.contains("outputs.nwb.subject.species"),
        "{e}"
    );
    assert!(!dir.path().join("bad.run").exists());
}

#[test]
fn a_run_on_an_object_store_uploads_its_nwb_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let moto = crate::common::LocalServer::moto_s3();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    python("s3_bucket.py", &[&endpoint, "lab"]);
    crate::common::simulate_small(&p("sim.zarr"));
    let workflow = workflow_with_nwb(dir.path());
    let out = crate::common::tessera()
        .args([
            "run",
            &workflow,
            "--input",
            &p("sim.zarr"),
            "--output",
            "s3://lab/results/nwb.run",
            "--tile-size",
            "32",
        ])
        .envs(crate::common::s3_env(&endpoint))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python(
        "s3_get.py",
        &[
            &endpoint,
            "lab",
            "results/nwb.run/sub-mouse-7_ses-1_ophys.nwb",
            &p("fetched.nwb"),
        ],
    );
    let bytes = std::fs::read(p("fetched.nwb")).unwrap();
    assert!(bytes.starts_with(b"\x89HDF\r\n\x1a\n"), "not an HDF5 file");
    // Over one part (16 MiB) it went up as a multipart upload; this one is smaller.
    assert!(bytes.len() > 100_000, "{} bytes", bytes.len());
}
