//! `tessera validate`, `tessera stages` and `tessera plan` on the example workflows and on broken
//! ones: the pipeline as data, checked before any work starts.

use crate::common::{example, fails, ok};

#[test]
fn the_example_workflows_validate_and_plan_on_a_recording() {
    let names = [
        "two-photon.yaml",
        "low-snr.yaml",
        "fast.yaml",
        "endoscope.yaml",
        "dendrites.yaml",
    ];
    let files: Vec<String> = names.iter().map(|n| example(n)).collect();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = ok(&args);
    assert_eq!(out.matches("valid workflow").count(), names.len(), "{out}");
    assert!(
        out.contains("register -> detect -> demix -> qc -> deconvolve"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    let sim = sim.to_str().unwrap();
    ok(&[
        "simulate", "--frames", "300", "--height", "256", "--width", "256", "--out", sim,
    ]);
    let plan = ok(&["plan", &example("two-photon.yaml"), "--input", sim]);
    for stage in ["register", "detect", "demix", "qc", "deconvolve"] {
        assert!(plan.contains(stage), "{plan}");
    }
    // The spatial demix tiles are gathered by one merge task (ROIs across tile edges, global
    // refit); QC and spike inference run once over the whole field.
    assert!(
        plan.lines()
            .any(|l| l.contains("demix/merge") && l.contains("whole") && l.contains(" 1 tasks")),
        "{plan}"
    );
    // A smaller budget and a tile size from the command line: more, smaller tasks.
    let small_plan = || -> serde_json::Value {
        let out = ok(&[
            "plan",
            &example("two-photon.yaml"),
            "--input",
            sim,
            "--memory-budget",
            "64MB",
            "--tile-size",
            "64",
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let small = small_plan();
    let detect = small["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "detect")
        .unwrap();
    assert_eq!(detect["tiles"].as_array().unwrap().len(), 16, "{detect}");
    for t in detect["tiles"].as_array().unwrap() {
        assert!(t["memory_bytes"].as_u64().unwrap() <= 64_000_000, "{t}");
    }
    // One key per task, stable from run to run.
    let keys = &small["task_keys"];
    let index = small["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["name"] == "detect")
        .unwrap();
    assert_eq!(keys[index].as_array().unwrap().len(), 16);
    assert_eq!(small_plan()["task_keys"], *keys);
}

#[test]
fn broken_workflows_fail_with_file_line_column_and_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "apiVersion: tessera/v1\nkind: Workflow\ninput: {}\nstages:\n  - uses: detetc\n  - uses: demix\n    with: {merge_treshold: 0.7}\n",
    )
    .unwrap();
    let err = fails(&["validate", path.to_str().unwrap()]);
    assert!(
        err.contains("typo.yaml:5:11: unknown stage `detetc`; did you mean `detect`?"),
        "{err}"
    );
    assert!(
        err.contains("typo.yaml:7:12: unknown parameter `merge_treshold`"),
        "{err}"
    );
    assert!(err.contains("did you mean `merge_threshold`?"), "{err}");
    // A missing file is named.
    let err = fails(&["validate", "no/such/workflow.yaml"]);
    assert!(err.contains("no/such/workflow.yaml"), "{err}");
}

#[test]
fn stages_lists_every_stage_with_its_parameters() {
    let out = ok(&["stages"]);
    for stage in [
        "register:",
        "register-piecewise:",
        "denoise:",
        "summarize:",
        "detect:",
        "demix:",
        "qc:",
        "deconvolve:",
    ] {
        assert!(out.contains(stage), "{stage} missing from {out}");
    }
    assert!(out.contains("min_corr"), "{out}");
    assert!(out.contains("one of soma, any"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["stages", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 8);
}
