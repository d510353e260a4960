//! Provenance: every output carries a record of how it was made and a manifest of what was written;
//! `tessera verify` re-hashes the output and its inputs and names every object that changed.

use crate::common::{fails, ok};

/// Flips one byte in the middle of `path`.
fn flip_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// The first chunk file under `dir` (a `c/` folder of a Zarr v3 array).
fn first_chunk(dir: &std::path::Path) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.components().any(|c| c.as_os_str() == "c") {
                return p;
            }
        }
    }
    panic!("no chunk under {}", dir.display());
}

#[test]
fn outputs_carry_provenance_and_verify_detects_changed_outputs_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--frames",
        "200",
        "--height",
        "64",
        "--width",
        "64",
        "--out",
        &p("sim.zarr"),
    ]);
    ok(&["register", &p("sim.zarr"), "--out", &p("reg.zarr")]);
    ok(&["register", &p("sim.zarr"), "--out", &p("reg2.zarr")]);

    // The record: tool and commit, command, times, the input with its manifest, the outputs' digest.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("reg.zarr/provenance/record.json")).unwrap())
            .unwrap();
    assert_eq!(record["tool"]["name"], "tessera");
    assert!(!record["tool"]["git_commit"].as_str().unwrap().is_empty());
    assert_eq!(record["command_name"], "register");
    assert!(record["started_at"].as_str().unwrap().ends_with('Z'));
    let input = &record["inputs"][0];
    assert!(
        input["uri"].as_str().unwrap().ends_with("sim.zarr"),
        "{input}"
    );
    assert!(input["files"].as_u64().unwrap() > 3, "{input}");
    // Same input, same command: bit-identical outputs (equal manifests), whatever the run.
    let record2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("reg2.zarr/provenance/record.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["outputs"]["manifest_sha256"],
        record2["outputs"]["manifest_sha256"]
    );
    // The RO-Crate names the action, the tool and the input.
    let crate_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("reg.zarr/ro-crate-metadata.json")).unwrap())
            .unwrap();
    let graph = crate_json["@graph"].as_array().unwrap();
    let action = graph.iter().find(|e| e["@type"] == "CreateAction").unwrap();
    assert_eq!(action["result"]["@id"], "./");
    assert!(
        action["object"][0]["@id"]
            .as_str()
            .unwrap()
            .ends_with("sim.zarr")
    );

    let shown = ok(&["provenance", &p("reg.zarr")]);
    assert!(shown.contains("command   "), "{shown}");
    assert!(shown.contains("sim.zarr: "), "{shown}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["provenance", &p("reg.zarr"), "--json"])).unwrap();
    assert_eq!(shown["command_name"], "register");
    assert!(shown["inputs"][0].get("manifest").is_none());

    let out = ok(&["verify", &p("reg.zarr")]);
    assert!(out.contains("files match the manifest"), "{out}");
    assert!(out.contains("unchanged"), "{out}");

    // A flipped byte in an output chunk is found and named.
    let chunk = first_chunk(&dir.path().join("reg.zarr/movie"));
    flip_byte(&chunk);
    let err = fails(&["verify", &p("reg.zarr")]);
    let key = chunk
        .strip_prefix(dir.path().join("reg.zarr"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("{key}: content changed")), "{err}");
    flip_byte(&chunk);
    ok(&["verify", &p("reg.zarr")]);

    // A changed input is found and named too.
    let chunk = first_chunk(&dir.path().join("sim.zarr/movie"));
    flip_byte(&chunk);
    let err = fails(&["verify", &p("reg.zarr")]);
    assert!(err.contains("input "), "{err}");
    assert!(err.contains("content changed"), "{err}");

    // An output without a record is refused with the reason.
    std::fs::remove_dir_all(dir.path().join("reg2.zarr/provenance")).unwrap();
    let err = fails(&["verify", &p("reg2.zarr")]);
    assert!(err.contains("provenance/record.json"), "{err}");
}
