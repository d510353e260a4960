//! Golden tests of validation messages and plans (files in `tests/golden/`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tessera-workflow` and review the diff), and a property test that
//! no input crashes the validator.

use std::path::PathBuf;

use proptest::prelude::*;
use tessera_core::Shape3;

use super::*;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

#[test]
fn every_example_workflow_validates() {
    let mut n = 0;
    for e in std::fs::read_dir(examples_dir()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            if let Err(err) = load(&path) {
                panic!("{err}");
            }
            n += 1;
        }
    }
    assert!(n >= 4, "{n} examples");
}

/// Compares `actual` with the golden file `name`, or rewrites it under UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it; review the diff)"
    );
}

/// What validating a file gives: the error text, or the normalized workflow.
fn outcome(name: &str) -> String {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    match parse(&text, name) {
        Ok(w) => format!(
            "valid: {}\n{}\n",
            w.chain(),
            serde_json::to_string_pretty(&w.normalized()).unwrap()
        ),
        Err(e) => format!("{e}\n"),
    }
}

#[test]
fn validation_messages_match_the_golden_files() {
    let mut cases: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "{cases:?}");
    for case in cases {
        golden(
            &format!("{case}.expected"),
            &outcome(&format!("{case}.yaml")),
        );
    }
}

#[test]
fn errors_carry_line_and_column_and_suggestions() {
    let text = "apiVersion: tessera/v1\nkind: Workflow\ninput: {}\nstages:\n  - uses: detect\n    with:\n      min_cor: 0.5\n  - uses: demix\n";
    let Err(WorkflowError::Invalid { diagnostics, .. }) = parse(text, "w.yaml") else {
        panic!("accepted")
    };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!((d.line, d.column), (7, 7), "{d}");
    assert!(d.message.contains("did you mean `min_corr`?"), "{d}");
}

#[test]
fn every_default_passes_its_own_type_check() {
    // A workflow that writes out every parameter of every stage at its default.
    let mut text = String::from("apiVersion: tessera/v1\nkind: Workflow\ninput: {}\nstages:\n");
    for (i, spec) in catalog().iter().enumerate() {
        text.push_str(&format!(
            "  - uses: {}\n    id: s{i}\n    with:\n",
            spec.name
        ));
        for p in &spec.params {
            let v = match &p.default {
                serde_json::Value::Null => "auto".to_string(),
                v => v.to_string().trim_matches('"').to_string(),
            };
            text.push_str(&format!("      {}: {v}\n", p.name));
        }
        if spec.params.is_empty() {
            text.push_str("      {}\n");
        }
    }
    // Each stage alone (the catalogue order is not one valid chain: both registrations, etc.).
    let Err(WorkflowError::Invalid { diagnostics, .. }) = parse(&text, "all.yaml") else {
        return;
    };
    for d in &diagnostics {
        assert!(
            d.message.contains("changes the movie") || d.message.contains("again"),
            "a default failed its type check: {d}"
        );
    }
}

#[test]
fn reordering_registration_and_denoising_is_valid_and_order_matters_for_cells() {
    let head = "apiVersion: tessera/v1\nkind: Workflow\ninput: {}\nstages:\n";
    let ok = |body: &str| parse(&format!("{head}{body}"), "w.yaml");
    assert!(
        ok("  - uses: register\n  - uses: denoise\n  - uses: detect\n  - uses: demix\n").is_ok()
    );
    assert!(
        ok("  - uses: denoise\n  - uses: register\n  - uses: detect\n  - uses: demix\n").is_ok()
    );
    assert!(ok("  - uses: register-piecewise\n  - uses: detect\n  - uses: demix\n").is_ok());
    let err = ok("  - uses: detect\n  - uses: register\n  - uses: demix\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("changes the movie after `detect`"), "{err}");
}

/// A 512x512 field of `t` frames in the simulator's chunks, 1 um pixels.
fn geometry_512(t: u64) -> RecordingGeometry {
    RecordingGeometry {
        shape: Shape3 { t, y: 512, x: 512 },
        chunks: [64, 128, 128],
        pixel_size_um: Some(1.0),
    }
}

#[test]
fn plans_follow_the_budget_and_the_tile_overrides() {
    let w = load(&examples_dir().join("two-photon.yaml")).unwrap();
    let geometry = geometry_512(6000);
    let p = plan(&w, &geometry, None, None).unwrap();
    let mut out = String::new();
    for s in &p.stages {
        let peak = s.tiles.iter().map(|t| t.memory_bytes).max().unwrap_or(0);
        let deps: usize = s.tiles.iter().map(|t| t.depends_on.len()).sum();
        out.push_str(&format!(
            "{} ({:?}): {} tiles, halo {} px, bin {}, peak {:.0} MB per task, {} dependencies\n",
            s.name,
            s.kind,
            s.tiles.len(),
            s.halo_px,
            s.bin_frames,
            peak as f64 / 1e6,
            deps
        ));
    }
    golden("two_photon.plan", &out);
    // Every task within the budget.
    for s in &p.stages {
        for t in &s.tiles {
            assert!(
                t.memory_bytes <= w.resources.memory_per_task_bytes,
                "{} {t:?}",
                s.name
            );
        }
    }
    // A smaller tile size on the command line gives more detection tiles.
    let small = plan(&w, &geometry, None, Some(64)).unwrap();
    let count = |p: &tessera_core::tiling::TilePlan, name: &str| {
        p.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .tiles
            .len()
    };
    assert!(count(&small, "detect") > count(&p, "detect"));
}

/// Tokens from which random near-YAML documents are built.
fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "apiVersion: tessera/v1\n",
        "kind: Workflow\n",
        "input:\n",
        "stages:\n",
        "  - uses: detect\n",
        "  - uses: demix\n",
        "    with:\n",
        "      radius_px: 6\n",
        "      min_corr: x\n",
        "    tile:\n",
        "      size_px: -3\n",
        "  ",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        "&a ",
        "*a ",
        "!tag ",
        "\n",
        "\t",
        "#",
        "?",
        "|\n",
        ">\n",
        "resources: {memory_per_task: 1TiB}\n",
        "null",
        "~",
        "1e999",
        "-",
        "uses",
        "with",
        "\u{0}",
        "é",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_documents_never_crash_the_validator(parts in prop::collection::vec(token(), 0..40)) {
        let text: String = parts.concat();
        match parse(&text, "random.yaml") {
            Ok(_) => {}
            Err(WorkflowError::Invalid { diagnostics, .. }) => {
                prop_assert!(!diagnostics.is_empty());
                for d in diagnostics {
                    prop_assert!(d.line >= 1 && d.column >= 1);
                }
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn random_bytes_never_crash_the_validator(text in ".{0,200}") {
        let _ = parse(&text, "random.yaml");
    }
}

#[test]
fn sizes_parse_with_decimal_and_binary_units() {
    assert_eq!(parse_bytes("2GiB"), Ok(2 * 1024 * 1024 * 1024));
    assert_eq!(parse_bytes("1.5 GB"), Ok(1_500_000_000));
    assert_eq!(parse_bytes("64mib"), Ok(64 << 20));
    assert_eq!(parse_bytes("4096"), Ok(4096));
    assert!(
        parse_bytes("2 parsecs")
            .unwrap_err()
            .contains("unknown unit")
    );
    assert!(parse_bytes("GiB").is_err());
    assert!(parse_bytes("0").is_err());
}

#[test]
fn one_changed_parameter_changes_the_keys_of_exactly_the_affected_tasks() {
    let base = std::fs::read_to_string(examples_dir().join("two-photon.yaml")).unwrap();
    let geometry = geometry_512(3000);
    let keys_of = |text: &str, digest: &str| {
        let w = parse(text, "w.yaml").unwrap();
        let p = plan(&w, &geometry, Some(512 << 20), None).unwrap();
        let names: Vec<String> = p.stages.iter().map(|s| s.name.clone()).collect();
        (names, task_keys(&w, &p, digest))
    };
    let (names, keys) = keys_of(&base, "recording-a");
    assert_eq!(
        names,
        [
            "register",
            "detect",
            "demix",
            "demix/merge",
            "qc",
            "deconvolve"
        ]
    );
    // Deterministic, and all distinct.
    assert_eq!(keys, keys_of(&base, "recording-a").1);
    let mut all: Vec<&String> = keys.iter().flatten().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "task keys collide");
    // Which stages' keys changed, given an edit of the workflow text.
    let changed = |edited: &str| -> Vec<&str> {
        let (_, k) = keys_of(edited, "recording-a");
        names
            .iter()
            .zip(keys.iter().zip(&k))
            .map(|(n, (a, b))| {
                // Within a stage, either every task changes or none does.
                let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(
                    diff == 0 || diff == a.len(),
                    "{n}: {diff} of {} changed",
                    a.len()
                );
                (n.as_str(), diff > 0)
            })
            .filter(|(_, d)| *d)
            .map(|(n, _)| n)
            .collect()
    };
    let qc = base.replace("  - uses: qc\n", "  - uses: qc\n    with: {min_snr: 2.5}\n");
    // The spike inference reads the merged traces, not the QC: only the QC task changes.
    assert_eq!(changed(&qc), ["qc"]);
    let detect = base.replace(
        "  - uses: detect\n",
        "  - uses: detect\n    with: {min_corr: 0.7}\n",
    );
    assert_eq!(
        changed(&detect),
        ["detect", "demix", "demix/merge", "qc", "deconvolve"]
    );
    let demix = base.replace(
        "  - uses: demix\n",
        "  - uses: demix\n    with: {merge_threshold: 0.9}\n",
    );
    assert_eq!(
        changed(&demix),
        ["demix", "demix/merge", "qc", "deconvolve"]
    );
    let register = base.replace(
        "  - uses: register\n",
        "  - uses: register\n    with: {max_shift_px: 20}\n",
    );
    assert_eq!(
        changed(&register),
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let deconv = base.replace(
        "  - uses: deconvolve\n",
        "  - uses: deconvolve\n    with: {order: 1}\n",
    );
    assert_eq!(changed(&deconv), ["deconvolve"]);
    // Renaming a stage does not change what it computes; metadata neither.
    let renamed = base
        .replace("  - uses: qc\n", "  - id: quality\n    uses: qc\n")
        .replace("name: two-photon", "name: renamed");
    let (_, k) = keys_of(&renamed, "recording-a");
    assert_eq!(k, keys);
    // Another recording: every key changes.
    let (_, other) = keys_of(&base, "recording-b");
    assert!(
        keys.iter()
            .flatten()
            .zip(other.iter().flatten())
            .all(|(a, b)| a != b)
    );
}
