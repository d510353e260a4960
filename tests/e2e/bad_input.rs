//! Bad input: a clear error naming the thing, exit code 1, and nothing that looks complete.

use crate::common::{fails, ok, python, shared_data};

#[test]
fn missing_path_and_non_zarr_are_named() {
    let e = fails(&["inspect", "/definitely/not/here.zarr"]);
    assert!(
        e.contains("/definitely/not/here.zarr") && e.contains("no such file"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let e = fails(&["inspect", dir.path().to_str().unwrap()]);
    assert!(e.contains("no Zarr v2 or v3 metadata"), "{e}");
    let e = fails(&["inspect", "ftp://host/x"]);
    assert!(e.contains("unsupported scheme 'ftp'"), "{e}");
}

#[test]
fn wrong_rank_dtype_and_corrupt_chunks_are_named() {
    let dir = tempfile::tempdir().unwrap();
    python("write_bad_fixtures.py", &[dir.path().to_str().unwrap()]);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let e = fails(&["inspect", &p("two_d.zarr")]);
    assert!(
        e.contains("has 2 dimensions; a recording needs 3 (t, y, x)"),
        "{e}"
    );
    let e = fails(&["inspect", &p("complex.zarr")]);
    assert!(e.contains("unsupported data type complex64"), "{e}");
    let e = fails(&["inspect", &p("corrupt.zarr"), "--sample-frames", "20"]);
    assert!(
        e.contains("chunk [1, 0, 0]") && e.contains("c/1/0/0"),
        "{e}"
    );
    // Non-finite samples are named (frame and pixel) and leave no output behind.
    for cmd in ["extract", "summarize", "denoise"] {
        let out = p(&format!("{cmd}-out.zarr"));
        let e = fails(&[cmd, &p("nan.zarr"), "--out", &out]);
        assert!(
            e.contains("non-finite value (NaN) at frame 25, pixel (3, 4)"),
            "{cmd}: {e}"
        );
        assert!(!std::path::Path::new(&out).exists(), "{cmd} left {out}");
    }
}

#[test]
fn inconsistent_tiff_pages_fail_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    python("write_tiffs.py", &[dir.path().to_str().unwrap()]);
    let src = dir.path().join("inconsistent.tif");
    let out = dir.path().join("bad.zarr");
    let e = fails(&[
        "ingest",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("inconsistent.tif") && e.contains("page 3") && e.contains("inconsistent"),
        "{e}"
    );
    assert!(!out.exists(), "a failed ingest must not leave an output");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("bad.zarr"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let e = fails(&[
        "ingest",
        dir.path().join("missing.tif").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("missing.tif"), "{e}");
    std::fs::write(dir.path().join("fake.tif"), b"this is not a tiff").unwrap();
    let e = fails(&[
        "ingest",
        dir.path().join("fake.tif").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("fake.tif") && e.contains("not a readable TIFF"),
        "{e}"
    );
}

#[test]
fn existing_outputs_are_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim.zarr");
    let o = out.to_str().unwrap();
    let args = [
        "simulate", "--frames", "10", "--height", "24", "--width", "24", "--out", o,
    ];
    ok(&args);
    let e = fails(&args);
    assert!(
        e.contains("already exists") && e.contains("--overwrite"),
        "{e}"
    );
    ok(&[&args[..], &["--overwrite"]].concat());
    let src = shared_data().join("neurofinder.01.01/images");
    let e = fails(&["ingest", src.to_str().unwrap(), "--out", o]);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn incomplete_recordings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim.zarr");
    ok(&[
        "simulate",
        "--frames",
        "8",
        "--height",
        "16",
        "--width",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    let meta = out.join("movie/zarr.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["attributes"]["tessera"]["status"] = "incomplete".into();
    std::fs::write(&meta, serde_json::to_string(&v).unwrap()).unwrap();
    let e = fails(&["inspect", out.to_str().unwrap()]);
    assert!(e.contains("incomplete") && e.contains("interrupted"), "{e}");
}

#[test]
fn bad_simulation_settings_are_named() {
    let e = fails(&[
        "simulate",
        "--out",
        "memory://x",
        "--set",
        "silent_fraction=2",
    ]);
    assert!(e.contains("silent_fraction"), "{e}");
    let e = fails(&[
        "simulate",
        "--out",
        "memory://x",
        "--set",
        "no_such_thing=1",
    ]);
    assert!(e.contains("unknown setting 'no_such_thing'"), "{e}");
    let e = fails(&["simulate", "--out", "memory://x", "--preset", "weird"]);
    assert!(e.contains("unknown preset 'weird'"), "{e}");
}

#[test]
fn impossible_settings_and_overlapping_outputs_are_refused() {
    let e = fails(&["simulate", "--out", "memory://dense", "--density", "1e30"]);
    assert!(e.contains("cell_density_per_mm2"), "{e}");
    let e = fails(&[
        "simulate",
        "--out",
        "memory://moving",
        "--set",
        "motion_jump_px=1e9",
    ]);
    assert!(e.contains("motion"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    ok(&[
        "simulate",
        "--frames",
        "20",
        "--height",
        "32",
        "--width",
        "32",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let s = sim.to_str().unwrap();
    let e = fails(&[
        "extract",
        s,
        "--out",
        dir.path().join("x.zarr").to_str().unwrap(),
        "--radius-px",
        "0",
    ]);
    assert!(e.contains("--radius-px"), "{e}");
    let inside = sim.join("registered.zarr");
    let e = fails(&[
        "register",
        s,
        "--out",
        inside.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(e.contains("overlaps input"), "{e}");
    let e = fails(&["summarize", s, "--out", s, "--overwrite"]);
    assert!(e.contains("overlaps input"), "{e}");
    // The input is untouched.
    ok(&["inspect", s]);
    let e = fails(&["ingest", "x.tif", "--out", "memory://r", "--frame-rate=-3"]);
    assert!(e.contains("frame rate must be a positive number"), "{e}");
}
