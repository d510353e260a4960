//! Input and output on S3-compatible storage (a moto server on loopback), behind a proxy that
//! answers some requests `503 Slow Down`: a workflow run reads its recording from `s3://`, writes
//! its results to `s3://`, retries the transient errors instead of failing, and its data objects
//! are byte-identical to the same run on local disk.

use std::collections::BTreeMap;

use crate::common::{LocalServer, example, python, tessera};

/// The data objects of a run (as `run::data_digests` keeps them) from `{key: sha256}` of all of
/// its objects; the root group's metadata is left out (it names the input's location).
fn data_only(all: BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.into_iter()
        .filter(|(k, _)| {
            !(k.starts_with("provenance/")
                || k.starts_with("run/")
                || k.contains("/provenance/")
                || k.ends_with("ro-crate-metadata.json")
                || k == "zarr.json")
        })
        .collect()
}

#[test]
fn a_workflow_runs_from_s3_to_s3_through_transient_errors_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let moto = LocalServer::moto_s3();
    let direct = format!("http://127.0.0.1:{}", moto.port);
    let count_file = dir.path().join("injected");
    // One request in 40 fails: hundreds of failures over the run, each retried.
    let proxy = LocalServer::flaky_proxy(moto.port, 40, &count_file, None);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    python("s3_bucket.py", &[&direct, "lab"]);

    // A recording made on local disk, copied object for object to the bucket (as `aws s3 sync`).
    crate::common::simulate_small(&p("sim.zarr"));
    python(
        "s3_upload.py",
        &[&direct, "lab", "recordings/sim.zarr", &p("sim.zarr")],
    );
    let common = ["--workers", "2"];
    crate::common::run_two_photon(&p("sim.zarr"), &p("local.run"), &common);
    let workflow = example("two-photon.yaml");

    let out = tessera()
        .args([
            "run",
            &workflow,
            "--input",
            "s3://lab/recordings/sim.zarr",
            "--output",
            "s3://lab/results/s3.run",
            "--tile-size",
            "32",
        ])
        .args(common)
        .envs(crate::common::s3_env(&endpoint))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let injected: u32 = std::fs::read_to_string(&count_file)
        .expect("the proxy injected failures")
        .trim()
        .parse()
        .unwrap();
    assert!(injected >= 10, "only {injected} failures injected");
    // Retried by the storage client: no task failed and was run again.
    assert!(!stderr.contains("task failed"), "{stderr}");

    let remote: BTreeMap<String, String> = serde_json::from_str(&python(
        "s3_digests.py",
        &[&direct, "lab", "results/s3.run"],
    ))
    .unwrap();
    let remote = data_only(remote);
    let local = crate::run::data_digests(&p("local.run"));
    assert!(local.len() > 100, "{} objects", local.len());
    let local = data_only(local);
    assert_eq!(remote, local);
    // The root group's metadata differs only in where the input was read.
    let root = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        let input = v["attributes"]["tessera"]["input"].take();
        (v, input)
    };
    let (remote_root, remote_input) = root(&python(
        "s3_digests.py",
        &[&direct, "lab", "results/s3.run", "zarr.json"],
    ));
    let (local_root, _) =
        root(&std::fs::read_to_string(dir.path().join("local.run/zarr.json")).unwrap());
    assert_eq!(remote_root, local_root);
    assert_eq!(remote_input, "s3://lab/recordings/sim.zarr");
    assert_eq!(remote_root["attributes"]["tessera"]["status"], "complete");
    eprintln!(
        "{} data objects identical; {injected} requests answered 503 and retried",
        remote.len()
    );
}
