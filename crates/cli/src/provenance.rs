//! The provenance record every command that writes an output sets on it (see
//! `tessera_io::provenance` for the layout): which tool and commit, the command line, where and
//! when it ran (host, Slurm and Kubernetes ids), its peak memory, and each input with the manifest
//! of what was read, so `tessera verify` can tell later whether the output or an input changed.

use std::time::SystemTime;

use anyhow::Context;
use serde_json::{Value, json};
use tessera_io::{Location, Manifest};

/// When a command started, for its record.
#[derive(Debug, Clone, Copy)]
pub struct Started(SystemTime);

impl Started {
    pub fn now() -> Started {
        Started(SystemTime::now())
    }
}

/// How an input is named in a record: its location (a filesystem input by its absolute path, so
/// the record can be checked from anywhere) and the manifest of every stored object, digested
/// now. An input that cannot be listed (an HTTP store) is described without a manifest: the run
/// is not failed for it, and `verify` reports that input as not checkable.
pub fn describe_input(uri: &str) -> anyhow::Result<(Value, Option<Manifest>)> {
    let loc = Location::parse(uri).with_context(|| format!("cannot parse input location {uri}"))?;
    let loc = match loc {
        Location::File(p) => Location::File(std::fs::canonicalize(&p).unwrap_or(p)),
        other => other,
    };
    Ok(match Manifest::of(&loc, &[]) {
        Ok(manifest) => (
            json!({
                "uri": loc.to_string(),
                "manifest_sha256": manifest.digest(),
                "files": manifest.files.len(),
                "bytes": manifest.files.values().map(|f| f.size).sum::<u64>(),
                "manifest": manifest,
            }),
            Some(manifest),
        ),
        Err(e) => {
            tracing::warn!(input = %loc, cause = %e, "input not digested for provenance");
            (
                json!({"uri": loc.to_string(), "manifest": null, "digest_error": e.to_string()}),
                None,
            )
        }
    })
}

/// The record for `command` (e.g. "extract") reading `inputs` (URIs or paths). Each input is
/// digested now: SHA-256 of every stored object.
pub fn record(command: &str, started: Started, inputs: &[&str]) -> anyhow::Result<Value> {
    let described = inputs
        .iter()
        .map(|uri| describe_input(uri).map(|d| d.0))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(record_with(command, started, described))
}

/// This build of tessera: name, version and git commit.
pub fn tool() -> Value {
    json!({
        "name": "tessera",
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("TESSERA_GIT_COMMIT"),
    })
}

/// The record for `command` with inputs already described ([`describe_input`]).
pub fn record_with(command: &str, started: Started, described: Vec<Value>) -> Value {
    let scheduler = tessera_io::provenance::scheduler_ids();
    let finished = SystemTime::now();
    json!({
        "tool": tool(),
        "command_name": command,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "host": tessera_io::provenance::hostname(),
        "scheduler": scheduler,
        "started_at": tessera_io::provenance::rfc3339(started.0),
        "finished_at": tessera_io::provenance::rfc3339(finished),
        "wall_s": finished.duration_since(started.0).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "peak_rss_bytes": tessera_io::provenance::peak_rss_bytes(),
        "threads": rayon::current_num_threads(),
        "inputs": described,
    })
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// An output written by a tessera command (path or URI).
    pub output: String,
}

/// `tessera verify`: re-hashes an output and its inputs against its provenance record; exits
/// non-zero and names every object that differs.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let loc = Location::parse(&args.output)?;
    let v = tessera_io::verify(&loc).with_context(|| format!("cannot verify {}", args.output))?;
    let mut problems = 0;
    if v.output.is_empty() {
        println!(
            "output {}: {} files match the manifest",
            args.output, v.output_files
        );
    } else {
        for d in &v.output {
            eprintln!("output {}: {d}", args.output);
        }
        problems += v.output.len();
    }
    for (uri, r) in &v.inputs {
        match r {
            Ok(diffs) if diffs.is_empty() => println!("input {uri}: unchanged"),
            Ok(diffs) => {
                for d in diffs {
                    eprintln!("input {uri}: {d}");
                }
                problems += diffs.len();
            }
            Err(e) => {
                eprintln!("input {uri}: cannot be checked: {e}");
                problems += 1;
            }
        }
    }
    if problems > 0 {
        anyhow::bail!(
            "{} does not match its provenance record: {problems} difference(s)",
            args.output
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// An output written by a tessera command (path or URI).
    pub output: String,
    /// Print the record as JSON (inputs' per-object manifests left out).
    #[arg(long)]
    pub json: bool,
}

/// `tessera provenance`: how an output was made, from its record.
pub fn show(args: ShowArgs) -> anyhow::Result<()> {
    let loc = Location::parse(&args.output)?;
    let store = tessera_io::Store::open(&loc)?;
    let bytes = store.get("provenance/record.json")?.with_context(|| {
        format!(
            "{} has no provenance/record.json: it was not written by a tessera command that records provenance",
            args.output
        )
    })?;
    let mut record: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}/provenance/record.json is not valid JSON", args.output))?;
    if let Some(inputs) = record["inputs"].as_array_mut() {
        for i in inputs {
            if let Some(obj) = i.as_object_mut() {
                obj.remove("manifest");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mb = |v: &Value| {
        v.as_f64()
            .map_or("-".into(), |b| format!("{:.1} MB", b / 1e6))
    };
    let short = |v: &Value| s(v).chars().take(16).collect::<String>();
    println!(
        "output    {} ({})",
        args.output,
        s(&record["outputs"]["location"])
    );
    println!(
        "made by   {} {} (commit {})",
        s(&record["tool"]["name"]),
        s(&record["tool"]["version"]),
        s(&record["tool"]["git_commit"])
    );
    println!("command   {}", s(&record["command"]));
    if record.get("run").is_some() {
        let r = &record["run"];
        println!(
            "workflow  {} (sha256 {}...), {} stage(s) planned",
            s(&record["workflow"]["metadata"]["name"]),
            short(&record["workflow_sha256"]),
            r["stages"].as_array().map_or(0, Vec::len)
        );
        println!(
            "tasks     {} ({} run, {} resumed) on {} worker(s); their records: {}",
            s(&r["tasks"]),
            s(&r["executed"]),
            s(&r["recovered"]),
            s(&r["workers"]),
            s(&r["task_records"])
        );
    }
    println!(
        "ran on    {}{}",
        s(&record["host"]),
        record["scheduler"]
            .as_object()
            .filter(|m| !m.is_empty())
            .map_or(String::new(), |m| format!(
                " ({})",
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
    );
    println!(
        "when      {} to {} ({:.1} s, {} threads, peak memory {})",
        s(&record["started_at"]),
        s(&record["finished_at"]),
        record["wall_s"].as_f64().unwrap_or(0.0),
        s(&record["threads"]),
        mb(&record["peak_rss_bytes"])
    );
    for i in record["inputs"].as_array().into_iter().flatten() {
        match i.get("digest_error") {
            Some(e) => println!("input     {} (not digested: {})", s(&i["uri"]), s(e)),
            None => println!(
                "input     {}: {} files, {}, manifest sha256 {}...",
                s(&i["uri"]),
                s(&i["files"]),
                mb(&i["bytes"]),
                short(&i["manifest_sha256"])
            ),
        }
    }
    println!(
        "wrote     {} files, {}, manifest sha256 {}... (tessera verify checks them)",
        s(&record["outputs"]["files"]),
        mb(&record["outputs"]["bytes"]),
        short(&record["outputs"]["manifest_sha256"])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(
            tessera_io::provenance::rfc3339(UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_795_914_061_250);
        assert_eq!(
            tessera_io::provenance::rfc3339(t),
            "2026-11-29T01:01:01.250Z"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(
            tessera_io::provenance::rfc3339(leap),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
