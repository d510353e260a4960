//! Provenance of an output: how it was made and a manifest that proves it is what was written.
//!
//! Layout, next to the output's own arrays:
//! ```text
//! <out>/provenance/record.json    the record the command set (tool, version, git commit, command
//!                                 line, host and scheduler ids, times, peak memory, parameters,
//!                                 inputs with their manifests), plus `outputs`: the manifest's
//!                                 digest, file count and bytes
//! <out>/provenance/manifest.json  SHA-256 and size of every stored object of the output except
//!                                 `provenance/` and `ro-crate-metadata.json`
//! <out>/ro-crate-metadata.json    an RO-Crate 1.1 describing the output as the result of a
//!                                 CreateAction by tessera on the inputs
//! ```
//! [`verify`] re-hashes the output and every input and reports each object that is missing, was
//! added or changed since.

use serde_json::{Value, json};

use crate::manifest::{Difference, Manifest};
use crate::{IoError, Location, Store};

/// Where a process runs, for provenance records: `$HOSTNAME`, else `/etc/hostname`, else
/// `unknown`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The batch scheduler's ids of this process, where set: Slurm job, array job and task, cluster,
/// partition and node (`SLURMD_NODENAME`); Kubernetes service host and, from the downward API as
/// deploy/k8s sets them, pod name, namespace and node (`NODE_NAME`).
pub fn scheduler_ids() -> serde_json::Map<String, Value> {
    [
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_CLUSTER_NAME",
        "SLURM_JOB_PARTITION",
        "SLURMD_NODENAME",
        "KUBERNETES_SERVICE_HOST",
        "POD_NAME",
        "POD_NAMESPACE",
        "NODE_NAME",
    ]
    .iter()
    .filter_map(|k| {
        std::env::var(k)
            .ok()
            .map(|v| ((*k).to_string(), Value::String(v)))
    })
    .collect()
}

/// The process's peak resident memory (VmHWM) in bytes, where the system reports it (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds (days to civil date after Hinnant's
/// `civil_from_days`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Keys of an output that its manifest does not cover: the record and RO-Crate (written after
/// it), and an embedded run's scheduling database (`run/state.db` with its WAL files: the
/// coordinator's log, still written after the result is published).
pub const NOT_IN_MANIFEST: &[&str] = &["provenance/", "ro-crate-metadata.json", "run/state.db"];

/// The objects to add to an output at `written` (its final location: `target`): the manifest, the
/// record completed with the manifest's summary, and the RO-Crate.
pub(crate) fn finish_record(
    mut record: Value,
    written: &Location,
    target: &Location,
) -> Result<Vec<(String, Vec<u8>)>, IoError> {
    let manifest = Manifest::of(written, NOT_IN_MANIFEST)?;
    // A filesystem output is named by its absolute path.
    let target = match target {
        Location::File(p) => Location::File(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        other => other.clone(),
    };
    let bytes: u64 = manifest.files.values().map(|f| f.size).sum();
    if let Some(obj) = record.as_object_mut() {
        obj.insert(
            "outputs".into(),
            json!({"location": target.to_string(), "manifest_sha256": manifest.digest(),
                   "files": manifest.files.len(), "bytes": bytes}),
        );
    }
    let crate_json = ro_crate(&record, &manifest);
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    Ok(vec![
        (
            "provenance/manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap_or_default(),
        ),
        ("provenance/record.json".into(), pretty(&record)),
        ("ro-crate-metadata.json".into(), pretty(&crate_json)),
    ])
}

/// An RO-Crate 1.1 (JSON-LD) for the output: the root dataset, the action that created it (its
/// command, times, tool, inputs) and the provenance files. Reads `tool.name`, `tool.version`,
/// `command`, `started_at`, `finished_at` and `inputs[].uri` from the record.
fn ro_crate(record: &Value, manifest: &Manifest) -> Value {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let tool = &record["tool"];
    let tool_id = format!("#{}-{}", s(&tool["name"]), s(&tool["version"]));
    let inputs: Vec<Value> = record["inputs"]
        .as_array()
        .map(|a| a.iter().map(|i| json!({"@id": s(&i["uri"])})).collect())
        .unwrap_or_default();
    // A run names its workflow and other parts (`ro_crate.workflow`, `ro_crate.parts`): the crate
    // then follows the Workflow Run Crate profile (the workflow is the action's instrument too).
    let workflow = record["ro_crate"]["workflow"].as_str().map(str::to_string);
    let parts: Vec<Value> = record["ro_crate"]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut has_part = vec![
        json!({"@id": "provenance/record.json"}),
        json!({"@id": "provenance/manifest.json"}),
    ];
    has_part.extend(parts.iter().map(|p| json!({"@id": p["@id"]})));
    let mut instrument = vec![json!({"@id": tool_id})];
    let mut root = json!({"@id": "./", "@type": "Dataset", "name": format!("tessera {}", s(&record["command_name"])),
           "datePublished": s(&record["finished_at"]),
           "hasPart": has_part,
           "description": format!("{} files, {} bytes; manifest sha256 {}",
               manifest.files.len(), manifest.files.values().map(|f| f.size).sum::<u64>(),
               manifest.digest())});
    let mut metadata = json!({"@id": "ro-crate-metadata.json", "@type": "CreativeWork",
           "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"}, "about": {"@id": "./"}});
    if let Some(w) = &workflow {
        instrument.push(json!({"@id": w}));
        root["mainEntity"] = json!({"@id": w});
        metadata["conformsTo"] = json!([
            {"@id": "https://w3id.org/ro/crate/1.1"},
            {"@id": "https://w3id.org/ro/wfrun/workflow/0.5"}
        ]);
    }
    let mut graph = vec![
        metadata,
        root,
        json!({"@id": "provenance/record.json", "@type": "File", "encodingFormat": "application/json",
               "name": "provenance record"}),
        json!({"@id": "provenance/manifest.json", "@type": "File", "encodingFormat": "application/json",
               "name": "SHA-256 of every object of the output"}),
        json!({"@id": tool_id, "@type": "SoftwareApplication", "name": s(&tool["name"]),
               "version": s(&tool["version"]), "identifier": s(&tool["git_commit"])}),
        json!({"@id": "#action", "@type": "CreateAction", "name": s(&record["command"]),
               "startTime": s(&record["started_at"]), "endTime": s(&record["finished_at"]),
               "instrument": instrument, "object": inputs.clone(), "result": {"@id": "./"}}),
    ];
    for p in parts {
        graph.push(p);
    }
    if let Some(w) = &workflow {
        graph.push(
            json!({"@id": "#tessera-workflow-language", "@type": "ComputerLanguage",
                          "name": "tessera workflow", "identifier": "tessera/v1"}),
        );
        if let Some(entity) = graph.iter_mut().find(|e| e["@id"] == json!(w)) {
            entity["@type"] = json!(["File", "SoftwareSourceCode", "ComputationalWorkflow"]);
            entity["programmingLanguage"] = json!({"@id": "#tessera-workflow-language"});
        }
    }
    for i in inputs {
        graph.push(json!({"@id": i["@id"], "@type": "Dataset"}));
    }
    json!({"@context": "https://w3id.org/ro/crate/1.1/context", "@graph": graph})
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The output's objects against its manifest.
    pub output: Vec<Difference>,
    /// Files checked in the output.
    pub output_files: usize,
    /// Per input (its URI): its objects against the manifest recorded when it was read, or why it
    /// could not be checked.
    pub inputs: Vec<(String, Result<Vec<Difference>, String>)>,
}

impl Verification {
    /// True when the output and every input match the record.
    pub fn ok(&self) -> bool {
        self.output.is_empty()
            && self
                .inputs
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(Vec::is_empty))
    }
}

/// Re-hashes the output at `location` against its manifest, and each input recorded in its
/// provenance against the manifest recorded when it was read. Errors when the output has no
/// provenance record.
pub fn verify(location: &Location) -> Result<Verification, IoError> {
    let store = Store::open(location)?;
    let read = |key: &str| -> Result<Value, IoError> {
        let bytes = store.get(key)?.ok_or_else(|| {
            IoError::Invalid(format!(
                "{location} has no {key}: it was not written by a tessera command that records provenance"
            ))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| IoError::Invalid(format!("{location}/{key} is not valid JSON: {e}")))
    };
    let record = read("provenance/record.json")?;
    let recorded: Manifest = serde_json::from_value(read("provenance/manifest.json")?)
        .map_err(|e| IoError::Invalid(format!("{location}/provenance/manifest.json: {e}")))?;
    let now = Manifest::of(location, NOT_IN_MANIFEST)?;
    let output = recorded.compare(&now);
    let mut inputs = Vec::new();
    for input in record["inputs"].as_array().into_iter().flatten() {
        let uri = input["uri"].as_str().unwrap_or_default().to_string();
        let check = || -> Result<Vec<Difference>, String> {
            let then: Manifest = serde_json::from_value(input["manifest"].clone())
                .map_err(|e| format!("no manifest recorded for it ({e})"))?;
            let loc = Location::parse(&uri).map_err(|e| e.to_string())?;
            let now = Manifest::of(&loc, &[]).map_err(|e| e.to_string())?;
            Ok(then.compare(&now))
        };
        inputs.push((uri.clone(), check()));
    }
    Ok(Verification {
        output,
        output_files: now.files.len(),
        inputs,
    })
}
