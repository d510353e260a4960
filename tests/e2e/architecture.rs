//! The crate dependency rules of ARCHITECTURE.md, checked on the resolved dependency graph.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// Normal (non-dev, non-build) dependency closure of every workspace package, by package name.
fn closures() -> HashMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(super::common::repo_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap().to_string();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        edges.insert(id, deps);
    }
    let mut result = HashMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let start = member.as_str().unwrap().to_string();
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(id) = stack.pop() {
            for d in edges.get(&id).into_iter().flatten() {
                if seen.insert(names[d].clone()) {
                    stack.push(d.clone());
                }
            }
        }
        result.insert(names[&start].clone(), seen);
    }
    result
}

#[test]
fn crate_dependency_rules_hold() {
    let all = closures();
    let forbid = |krate: &str, banned: &[&str]| {
        let Some(deps) = all.get(krate) else { return };
        for b in banned {
            assert!(
                !deps.contains(*b),
                "{krate} must not depend (even indirectly) on {b}"
            );
        }
    };
    // core: no I/O, no async, no other tessera crate.
    forbid(
        "tessera-core",
        &[
            "tokio",
            "tonic",
            "prost",
            "zarrs",
            "object_store",
            "ndarray",
            "tessera-kernels",
            "tessera-io",
        ],
    );
    // kernels: arrays in, arrays out.
    forbid(
        "tessera-kernels",
        &[
            "tokio",
            "tonic",
            "prost",
            "zarrs",
            "object_store",
            "tessera-io",
        ],
    );
    // io and kernels do not know each other; io has no RPC.
    forbid("tessera-io", &["tessera-kernels", "tonic", "prost"]);
    // The coordinator never touches pixels; workers never parse YAML.
    forbid(
        "tessera-coordinator",
        &["tessera-kernels", "tessera-io", "zarrs"],
    );
    forbid(
        "tessera-worker",
        &["tessera-workflow", "marked-yaml", "serde-saphyr"],
    );
    forbid(
        "tessera-workflow",
        &["tokio", "tonic", "zarrs", "tessera-kernels", "tessera-io"],
    );
    // The NWB export reads results through io; it computes nothing and speaks no RPC. HDF5 is
    // linked by the export and by the worker, whose publish task writes a workflow's
    // `outputs.nwb`; never by the coordinator (it touches no data) or io.
    forbid(
        "tessera-nwb",
        &["tessera-kernels", "tessera-worker", "tonic", "prost"],
    );
    for krate in ["tessera-coordinator", "tessera-io", "tessera-workflow"] {
        forbid(krate, &["hdf5-metno", "tessera-nwb"]);
    }
    forbid("tessera-coordinator", &["tessera-report"]);
    // The report draws what a run stored: it computes no science and speaks no RPC.
    forbid(
        "tessera-report",
        &[
            "tessera-kernels",
            "tessera-worker",
            "tonic",
            "prost",
            "hdf5-metno",
        ],
    );
    // The wire contract knows only the core vocabulary.
    forbid(
        "tessera-proto",
        &[
            "tessera-kernels",
            "tessera-io",
            "tessera-workflow",
            "zarrs",
            "ndarray",
        ],
    );
    for krate in [
        "tessera-worker",
        "tessera-coordinator",
        "tessera-workflow",
        "tessera-proto",
    ] {
        assert!(all.contains_key(krate), "{krate} is a workspace package");
    }
    assert!(
        all.contains_key("tessera-cli"),
        "workspace packages: {:?}",
        all.keys()
    );
}
