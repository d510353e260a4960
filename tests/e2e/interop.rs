//! Interop with zarr-python 3: what it writes, tessera reads identically, and the reverse.

use std::path::Path;

use tessera_core::{Box3, Dtype};
use tessera_io::Recording;

use crate::common::{LocalServer, ok, python, read_raw_u16};

fn raw_as_f32(path: &Path, dtype: Dtype) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    match dtype {
        Dtype::Uint16 => b
            .chunks_exact(2)
            .map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::Int16 => b
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::Float32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        other => panic!("fixture dtype {other} not handled"),
    }
}

#[test]
fn arrays_written_by_zarr_python_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    python("write_zarr_fixtures.py", &[dir.path().to_str().unwrap()]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let cases = manifest.as_object().unwrap();
    assert_eq!(cases.len(), 6);
    for (case, info) in cases {
        let store = dir.path().join(format!("{case}.zarr"));
        let array = info["array"].as_str();
        let rec = Recording::open(store.to_str().unwrap(), array)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let dtype = Dtype::parse(info["dtype"].as_str().unwrap()).unwrap();
        assert_eq!(rec.dtype(), dtype, "{case}");
        let shape = rec.shape();
        assert_eq!(shape.to_array().to_vec(), vec![37, 50, 45], "{case}");
        let want = raw_as_f32(&dir.path().join(format!("{case}.raw")), dtype);
        // The whole array, then unaligned boxes, must equal the values Python wrote.
        let all = rec.read_box_f32(&shape.full_box()).unwrap();
        assert_eq!(
            all.as_slice().unwrap(),
            &want[..],
            "{case}: whole array differs"
        );
        for (t, y, x) in [
            (3..30, 7..41, 5..44),
            (36..37, 0..50, 44..45),
            (0..9, 15..17, 0..45),
        ] {
            let b = Box3::within(&shape, t.clone(), y.clone(), x.clone()).unwrap();
            let got = rec.read_box_f32(&b).unwrap();
            for ((i, j, k), v) in got.indexed_iter() {
                let (ti, yi, xi) = (
                    t.start as usize + i,
                    y.start as usize + j,
                    x.start as usize + k,
                );
                assert_eq!(
                    *v,
                    want[(ti * 50 + yi) * 45 + xi],
                    "{case}: box {b} at {i},{j},{k}"
                );
            }
        }
        // The native type reads too (no float conversion in the way).
        if dtype == Dtype::Int16 {
            let native = rec.read_box_as::<i16>(&shape.full_box()).unwrap();
            assert_eq!(
                native.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(),
                want
            );
        }
        // Python's codecs are reported by name.
        let codecs = rec.codecs().join(" ");
        let expected = match case.as_str() {
            "v3_zstd" | "v3_float32" => "zstd",
            "v3_sharded" => "sharding_indexed",
            "v2_blosc" => "blosc",
            "v2_zlib" => "zlib",
            "v2_int16_be" => "zstd",
            _ => unreachable!(),
        };
        assert!(codecs.contains(expected), "{case}: codecs {codecs}");
        // inspect works on every fixture.
        let report = ok(&["inspect", store.to_str().unwrap(), "--json"]
            .into_iter()
            .chain(array.map(|a| ["--array", a]).into_iter().flatten())
            .collect::<Vec<_>>());
        let v: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(v["shape"], serde_json::json!([37, 50, 45]), "{case}");
    }
}

#[test]
fn recordings_written_by_tessera_read_identically_in_zarr_python() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim.zarr");
    let out_s = out.to_str().unwrap();
    ok(&[
        "simulate", "--preset", "base", "--frames", "70", "--height", "64", "--width", "48",
        "--seed", "3", "--chunks", "32,32,32", "--out", out_s,
    ]);
    // tessera's own reading, dumped raw, is what Python must see.
    let rec = Recording::open(out_s, None).unwrap();
    assert_eq!(rec.array_path(), "/movie");
    let movie = rec.read_box_as::<u16>(&rec.shape().full_box()).unwrap();
    let raw = dir.path().join("movie.raw");
    std::fs::write(
        &raw,
        movie
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    assert_eq!(read_raw_u16(&raw).len(), 70 * 64 * 48);
    python(
        "read_tessera_output.py",
        &["recording", out_s, "movie", raw.to_str().unwrap(), "uint16"],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&python("read_tessera_output.py", &["simulation", out_s])).unwrap();
    let sum: u64 = movie.iter().map(|&v| u64::from(v)).sum();
    assert_eq!(summary["movie_sum"].as_u64().unwrap(), sum);
    assert_eq!(summary["movie_shape"], serde_json::json!([70, 64, 48]));
    let cells = summary["fluorescence_shape"][0].as_u64().unwrap();
    assert!(cells > 0);
    assert_eq!(summary["fluorescence_shape"][1], 70);
    assert_eq!(summary["max_cell"].as_u64().unwrap() + 1, cells);
    assert_eq!(summary["attrs"]["tessera"]["kind"], "simulation");
    // No zarrs-internal attribute leaks into what Python sees.
    assert!(
        std::fs::read_to_string(out.join("movie/zarr.json"))
            .unwrap()
            .contains("\"status\": \"complete\"")
            || std::fs::read_to_string(out.join("movie/zarr.json"))
                .unwrap()
                .contains("\"status\":\"complete\"")
    );
    assert!(
        !std::fs::read_to_string(out.join("movie/zarr.json"))
            .unwrap()
            .contains("_zarrs")
    );
}

#[test]
fn recordings_read_over_http_equal_local_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("web.zarr");
    ok(&[
        "simulate",
        "--frames",
        "30",
        "--height",
        "40",
        "--width",
        "40",
        "--chunks",
        "8,16,16",
        "--out",
        out.to_str().unwrap(),
    ]);
    let server = LocalServer::range_http(dir.path());
    let url = format!("http://127.0.0.1:{}/web.zarr", server.port);
    let local = Recording::open(out.to_str().unwrap(), None).unwrap();
    let remote = Recording::open(&url, None).unwrap();
    assert_eq!(remote.shape(), local.shape());
    let b = Box3::within(&local.shape(), 3..27, 5..39, 1..33).unwrap();
    assert_eq!(
        remote.read_box_as::<u16>(&b).unwrap(),
        local.read_box_as::<u16>(&b).unwrap()
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", &url, "--json"])).unwrap();
    assert_eq!(v["shape"], serde_json::json!([30, 40, 40]));
    // HTTP is read-only: writing there is refused with a clear message.
    let e = crate::common::fails(&[
        "simulate", "--frames", "4", "--height", "16", "--width", "16", "--out", &url,
    ]);
    assert!(e.contains("read-only"), "{e}");
}

#[test]
fn recordings_round_trip_through_s3() {
    let server = LocalServer::moto_s3();
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let envs = crate::common::s3_env(&endpoint);
    python("s3_bucket.py", &[&endpoint, "recordings"]);
    let with_env = |args: &[&str]| {
        let out = crate::common::tessera()
            .args(args)
            .envs(envs.clone())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.zarr");
    let sim = [
        "simulate", "--frames", "24", "--height", "32", "--width", "40", "--seed", "5", "--chunks",
        "8,16,16", "--out",
    ];
    let (code, _, err) = with_env(&[&sim[..], &["s3://recordings/runs/sim.zarr"]].concat());
    assert_eq!(code, Some(0), "{err}");
    ok(&[&sim[..], &[local.to_str().unwrap()]].concat());
    // Writing again without --overwrite is refused on S3 too.
    let (code, _, err) = with_env(&[&sim[..], &["s3://recordings/runs/sim.zarr"]].concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists"), "{err}");
    let (code, json, err) = with_env(&["inspect", "s3://recordings/runs/sim.zarr", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let remote: serde_json::Value = serde_json::from_str(&json).unwrap();
    let local_v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", local.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(remote["shape"], local_v["shape"]);
    // Identical pixels: the statistics of the whole movie agree exactly.
    assert_eq!(remote["stats"], local_v["stats"]);
    let (code, _, err) = with_env(&["inspect", "s3://recordings/nothing-here.zarr"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no Zarr v2 or v3 metadata"), "{err}");

    // A chunk larger than a part (5 MiB here) goes up as a multipart upload and reads back whole.
    let big = [
        "simulate",
        "--frames",
        "400",
        "--height",
        "128",
        "--width",
        "128",
        "--seed",
        "5",
        "--chunks",
        "400,128,128",
        "--out",
    ];
    let out = crate::common::tessera()
        .args(big)
        .arg("s3://recordings/big.zarr")
        .envs(envs.clone())
        .env("TESSERA_PART_SIZE", (5u64 << 20).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head: serde_json::Value = serde_json::from_str(&python(
        "s3_head.py",
        &[&endpoint, "recordings", "big.zarr/movie/c/0/0/0"],
    ))
    .unwrap();
    assert!(head["size"].as_u64().unwrap() > 5 << 20, "{head}");
    assert!(
        head["etag"].as_str().unwrap().ends_with("-2"),
        "not a 2-part upload: {head}"
    );
    let local_big = dir.path().join("big.zarr");
    ok(&[&big[..], &[local_big.to_str().unwrap()]].concat());
    let (code, json, err) = with_env(&["inspect", "s3://recordings/big.zarr", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let remote: serde_json::Value = serde_json::from_str(&json).unwrap();
    let local_v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", local_big.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(remote["stats"], local_v["stats"]);
}

#[test]
fn s3_settings_come_from_the_aws_cli_files_when_the_environment_has_none() {
    let server = LocalServer::moto_s3();
    let direct = format!("http://127.0.0.1:{}", server.port);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    // Never fails a request (one in a million); records the access key ids it sees.
    let proxy =
        LocalServer::flaky_proxy(server.port, 1_000_000, &dir.path().join("n"), Some(&keys));
    python("s3_bucket.py", &[&direct, "lab"]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = x\n\n[imaging]\naws_access_key_id = AKIAIMAGINGLAB\naws_secret_access_key = secret\n",
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[profile imaging]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:{}\ns3 =\n  addressing_style = path\n",
            proxy.port
        ),
    )
    .unwrap();
    let with_profile = |profile: &str, args: &[&str]| {
        let mut cmd = crate::common::tessera();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("HOME", &home)
            .env("AWS_PROFILE", profile)
            .env("AWS_ALLOW_HTTP", "true")
            .output()
            .unwrap()
    };
    let out = with_profile(
        "imaging",
        &[
            "simulate",
            "--frames",
            "8",
            "--height",
            "16",
            "--width",
            "16",
            "--seed",
            "1",
            "--out",
            "s3://lab/rec.zarr",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_profile("imaging", &["inspect", "s3://lab/rec.zarr"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Signed with the profile's key, sent to the profile's endpoint.
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap().trim(),
        "AKIAIMAGINGLAB"
    );
    // A profile that is in neither file is named in the error.
    let out = with_profile("nobody", &["inspect", "s3://lab/rec.zarr"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_PROFILE=nobody: no such profile"), "{err}");
    assert!(err.contains(".aws/credentials"), "{err}");
}

/// A run's results open with zarr and numpy alone: the documented snippet (docs/FORMATS.md,
/// tests/python/read_results.py) finds every cell, its footprint, traces and spikes and the
/// registration's shifts, and reproduces the stored dF/F from footprints, traces and background.
#[test]
fn run_results_read_with_zarr_alone_and_their_dff_is_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    crate::common::simulate_small(&p("sim.zarr"));
    crate::common::run_two_photon(&p("sim.zarr"), &p("out.run"), &[]);
    let got: serde_json::Value =
        serde_json::from_str(&python("read_results.py", &[&p("out.run")])).unwrap();
    // The same arrays, read by tessera.
    let store =
        tessera_io::Store::open(&tessera_io::Location::parse(&p("out.run")).unwrap()).unwrap();
    let traces = store.read_array::<f32>("rois/traces").unwrap();
    let qc: Vec<serde_json::Value> =
        serde_json::from_slice(&store.get("rois/qc.json").unwrap().unwrap()).unwrap();
    assert!(traces.shape()[0] >= 3, "{:?}", traces.shape());
    assert_eq!(got["cells"], traces.shape()[0]);
    assert_eq!(got["qc_cells"], qc.len());
    assert_eq!(got["frames"], 300);
    assert_eq!(got["shift_frames"], 300);
    let sum: f64 = traces.iter().map(|&v| f64::from(v)).sum();
    assert!((got["traces_sum"].as_f64().unwrap() - sum).abs() <= 1e-6 * sum.abs().max(1.0));
    assert!(got["dff_max_abs_error"].as_f64().unwrap() <= 1e-4, "{got}");
    assert!(
        got["fluorescence_max_rel_error"].as_f64().unwrap() <= 1e-4,
        "{got}"
    );
    // The documented snippet is the script's code, line for line.
    let doc = std::fs::read_to_string(crate::common::repo_root().join("docs/FORMATS.md")).unwrap();
    let script =
        std::fs::read_to_string(crate::common::repo_root().join("tests/python/read_results.py"))
            .unwrap();
    let snippet = doc
        .split("<!-- read_results.py -->")
        .nth(1)
        .expect("docs/FORMATS.md has the read_results.py snippet");
    for line in snippet
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("```"))
    {
        assert!(
            script.contains(line),
            "docs line not in read_results.py: {line}"
        );
    }
}
