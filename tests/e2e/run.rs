//! `tessera run`: workflows run end to end on simulated recordings through the embedded
//! coordinator and its worker threads. Every example in `workflows/` runs and is scored; the
//! result does not depend on the number of workers or the order tasks finish in; stages can be
//! reordered; an interrupted run resumes without redoing committed tasks; bad data fails the run
//! with the sample named and leaves nothing that looks complete. Figures in docs/ACCURACY.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_io::{Location, Manifest};

use crate::common::{evaluate, example, fails, ok, python, score, tessera};

fn simulate(out: &str, preset: &str, size: &str, frames: &str, extra: &[&str]) {
    let mut args = vec![
        "simulate", "--preset", preset, "--frames", frames, "--height", size, "--width", size,
        "--seed", "3", "--out", out,
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

fn f1(truth: &str, estimate: &str) -> f64 {
    score(&evaluate(truth, estimate), "iou50")["f1"]
        .as_f64()
        .unwrap()
}

/// SHA-256 of every data object of a run: results and task outputs, without provenance records,
/// RO-Crates and the run's task log (they hold times and hosts).
pub(crate) fn data_digests(run: &str) -> BTreeMap<String, String> {
    Manifest::of(&Location::parse(run).unwrap(), &["provenance/", "run/"])
        .unwrap()
        .files
        .into_iter()
        .filter(|(k, _)| !k.contains("/provenance/") && !k.ends_with("ro-crate-metadata.json"))
        .map(|(k, d)| (k, d.sha256))
        .collect()
}

#[test]
fn every_example_workflow_runs_and_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    simulate(&p("base.zarr"), "base", "128", "600", &[]);
    simulate(&p("low-snr.zarr"), "low-snr", "128", "600", &[]);
    simulate(
        &p("dendrites.zarr"),
        "dendrites",
        "160",
        "1000",
        &["--motion-px", "0", "--set", "dendrite_density_per_mm2=150"],
    );
    // Two workers, so that tasks of one stage overlap those of the next. (workflow, recording, F1 floor): the floors sit a little under the figures measured on
    // these recordings (docs/ACCURACY.md). The endoscope workflow runs on a two-photon recording:
    // one-photon extraction (a ring background model) is not built yet.
    let cases = [
        ("two-photon.yaml", "base.zarr", 0.95),
        ("fast.yaml", "base.zarr", 0.85),
        ("endoscope.yaml", "base.zarr", 0.90),
        ("low-snr.yaml", "low-snr.zarr", 0.60),
        ("dendrites.yaml", "dendrites.zarr", 0.80),
    ];
    let mut figures = Vec::new();
    for (workflow, recording, floor) in cases {
        let out = p(&format!("{workflow}.run"));
        let stdout = ok(&[
            "run",
            &example(workflow),
            "--input",
            &p(recording),
            "--output",
            &out,
            "--workers",
            "2",
        ]);
        assert!(stdout.contains("0 resumed"), "{stdout}");
        // The run's record, its task log and its RO-Crate.
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{out}/provenance/record.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["command_name"], "run");
        assert_eq!(
            record["workflow"]["metadata"]["name"],
            workflow.trim_end_matches(".yaml")
        );
        let tasks = record["run"]["tasks"].as_u64().unwrap();
        // No task read something its dependencies had not committed (that would fail and retry).
        assert_eq!(record["run"]["retries"], 0, "{}", record["run"]);
        let log = std::fs::read_to_string(format!("{out}/run/tasks.jsonl")).unwrap();
        assert_eq!(log.lines().count() as u64, tasks, "one record per task");
        for line in log.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(r["task"]["key"].as_str().unwrap().len() == 64, "{r}");
            assert!(r["outputs"]["manifest_sha256"].is_string(), "{r}");
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");
        }
        let crate_json = std::fs::read_to_string(format!("{out}/ro-crate-metadata.json")).unwrap();
        assert!(
            crate_json.contains("ComputationalWorkflow") && crate_json.contains("run/tasks.jsonl"),
            "{crate_json}"
        );
        let shown = ok(&["provenance", &out]);
        assert!(
            shown.contains(&format!("{tasks} ({tasks} run, 0 resumed)")),
            "{shown}"
        );
        ok(&["verify", &out]);
        let score = f1(&p(recording), &out);
        figures.push(format!("{workflow} on {recording}: F1 {score:.3}"));
        assert!(
            score >= floor,
            "{workflow} on {recording}: F1 {score} < {floor}"
        );
    }
    eprintln!("{}", figures.join("\n"));
}

#[test]
fn the_result_does_not_depend_on_workers_or_completion_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    simulate(&p("sim.zarr"), "base", "128", "600", &[]);
    let (workflow, sim) = (example("two-photon.yaml"), p("sim.zarr"));
    let run = |name: &str, extra: &[&str]| {
        let out = p(name);
        let mut args = vec![
            "run",
            &workflow,
            "--input",
            &sim,
            "--output",
            &out,
            "--tile-size",
            "48",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        data_digests(&out)
    };
    let one = run("one.run", &["--workers", "1"]);
    let three = run("three.run", &["--workers", "3"]);
    let shuffled = run("shuffled.run", &["--workers", "3", "--shuffle-seed", "11"]);
    // 9 detect and 9 demix tiles, each a task with its own output.
    let task_dirs = one
        .keys()
        .filter_map(|k| k.strip_prefix("tasks/")?.split('/').next())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(task_dirs.len() >= 20, "{} tasks", task_dirs.len());
    assert!(one.keys().any(|k| k.starts_with("rois/traces/")));
    assert_eq!(one, three, "1 worker vs 3 workers");
    assert_eq!(one, shuffled, "1 worker vs 3 workers, shuffled completion");
}

#[test]
fn stages_can_be_reordered_and_both_orders_are_scored() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    simulate(&p("sim.zarr"), "low-snr", "128", "600", &[]);
    let body = |first: &str, second: &str| {
        format!(
            "apiVersion: tessera/v1\nkind: Workflow\nmetadata: {{name: {first}-then-{second}}}\ninput: {{}}\n\
             stages:\n  - uses: {first}\n  - uses: {second}\n  - uses: detect\n  - uses: demix\n\
             \x20 - uses: qc\n  - uses: deconvolve\n"
        )
    };
    let mut figures = Vec::new();
    for (first, second) in [("register", "denoise"), ("denoise", "register")] {
        let file = p(&format!("{first}-{second}.yaml"));
        std::fs::write(&file, body(first, second)).unwrap();
        let out = p(&format!("{first}-{second}.run"));
        ok(&["run", &file, "--input", &p("sim.zarr"), "--output", &out]);
        let score = f1(&p("sim.zarr"), &out);
        figures.push(format!("{first} then {second}: F1 {score:.3}"));
        assert!(score >= 0.6, "{first} then {second}: F1 {score}");
    }
    eprintln!("{}", figures.join("\n"));
}

/// Committed task outputs of a run (folders under tasks/ that are not staging folders).
fn committed_tasks(run: &Path) -> usize {
    std::fs::read_dir(run.join("tasks"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_interrupted_run_resumes_without_redoing_committed_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    simulate(&p("sim.zarr"), "base", "128", "600", &[]);
    let args = |out: &str| {
        vec![
            "run".to_string(),
            example("two-photon.yaml"),
            "--input".into(),
            p("sim.zarr"),
            "--output".into(),
            out.to_string(),
            "--tile-size".into(),
            "32".into(),
        ]
    };
    let reference = p("reference.run");
    ok(&args(&reference)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let total = committed_tasks(Path::new(&reference));

    // Kill the run (SIGKILL: no cleanup) once a few tasks have committed.
    let out = p("killed.run");
    let mut child = tessera().args(args(&out)).spawn().unwrap();
    let started = Instant::now();
    while committed_tasks(Path::new(&out)) < 4 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = committed_tasks(Path::new(&out));
    assert!(
        done >= 4 && done < total,
        "{done} of {total} tasks committed when killed"
    );
    // What is there does not look like a result.
    let e = fails(&["evaluate", "--truth", &p("sim.zarr"), "--estimate", &out]);
    assert!(e.contains("incomplete"), "{e}");

    // The same command resumes: committed tasks are kept, the others run, and the result is the
    // reference's, byte for byte.
    let stdout = ok(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    let resumed: usize = stdout
        .split(" resumed")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resumed count in {stdout}"));
    assert!(
        resumed >= done,
        "{resumed} resumed, {done} were committed: {stdout}"
    );
    assert_eq!(data_digests(&out), data_digests(&reference));
}

#[test]
fn a_run_on_bad_data_names_the_sample_and_leaves_nothing_complete() {
    let dir = tempfile::tempdir().unwrap();
    python("write_bad_fixtures.py", &[dir.path().to_str().unwrap()]);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let out = p("nan.run");
    let e = fails(&[
        "run",
        &example("two-photon.yaml"),
        "--input",
        &p("nan.zarr"),
        "--output",
        &out,
    ]);
    assert!(
        e.contains("non-finite value (NaN) at frame 25, pixel (3, 4)") && e.contains("resume"),
        "{e}"
    );
    std::fs::write(p("none.json"), "[]").unwrap();
    let e = fails(&["evaluate", "--truth", &p("none.json"), "--estimate", &out]);
    assert!(e.contains("incomplete"), "{e}");
    // A workflow that does not validate fails before any work, with file, line and column.
    let bad = p("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: tessera/v1\nkind: Workflow\nstages:\n  - uses: detekt\n",
    )
    .unwrap();
    let e = fails(&[
        "run",
        &bad,
        "--input",
        &p("nan.zarr"),
        "--output",
        &p("x.run"),
    ]);
    assert!(
        e.contains("bad.yaml:4:") && e.contains("did you mean `detect`"),
        "{e}"
    );
    assert!(!Path::new(&p("x.run")).exists());
}
