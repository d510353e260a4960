//! The run's last task: turns the run's output, where every task committed under
//! `tasks/<key>/`, into a result. It copies each path a task publishes (`rois/...`,
//! `summary/...`; the last task in plan order publishing a path wins: QC's acceptance over the
//! merge's), writes `run/tasks.jsonl` (every task's record), `run/workflow.json` (the normalized
//! workflow), the root attributes and the run's record and RO-Crate, and marks the output
//! complete (`Output::finish`, written last).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde_json::{Map, Value, json};
use tessera_io::{Location, Output, Store};

use crate::{TaskResult, TaskSpec, WorkerError, WorkerInfo};

pub(crate) fn run(spec: &TaskSpec, worker: &WorkerInfo) -> Result<TaskResult, WorkerError> {
    let started = SystemTime::now();
    let (output, _) = Output::resume(&spec.output, false)?;
    let stores: Vec<Store> = spec
        .inputs
        .iter()
        .map(|i| Ok(Store::open(&Location::parse(&i.uri)?)?))
        .collect::<Result<_, WorkerError>>()?;
    let mut publisher: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in stores.iter().enumerate() {
        let attrs = s.attributes("")?.unwrap_or_default();
        for p in attrs
            .get("tessera")
            .and_then(|t| t.get("publishes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            publisher.insert(p.to_string(), i);
        }
    }
    let groups: BTreeSet<&str> = publisher
        .keys()
        .filter_map(|p| p.split_once('/').map(|(g, _)| g))
        .collect();
    for g in groups {
        output.write_group_at(g, Map::new())?;
    }
    for (path, &i) in &publisher {
        output.store().copy_from(&stores[i], path)?;
    }
    let mut lines = String::new();
    let mut workers = BTreeSet::new();
    for (input, s) in spec.inputs.iter().zip(&stores) {
        let bytes = s
            .get("provenance/record.json")?
            .ok_or_else(|| WorkerError::Spec(format!("{}: no provenance record", input.uri)))?;
        let record: Value = serde_json::from_slice(&bytes)
            .map_err(|e| WorkerError::Spec(format!("{}: provenance record: {e}", input.uri)))?;
        if let Some(w) = record["worker"].as_str() {
            workers.insert(w.to_string());
        }
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    output.write_group_at("run", Map::new())?;
    output.write_file("run/tasks.jsonl", lines.into_bytes())?;
    let p = &spec.params;
    let normalized = p.get("workflow").cloned().unwrap_or(Value::Null);
    let name = normalized["metadata"]["name"].clone();
    output.write_file(
        "run/workflow.json",
        serde_json::to_vec_pretty(&normalized).map_err(|e| WorkerError::Internal(e.to_string()))?,
    )?;
    let tasks = spec.inputs.len();
    let mut root = Map::new();
    root.insert(
        "tessera".into(),
        json!({"kind": "run", "workflow": name, "workflow_sha256": p.get("workflow_sha256"),
               "input": p.get("input_uri"), "input_digest": p.get("input_digest"),
               "stages": p.get("stages"), "tasks": tasks}),
    );
    output.write_group(root)?;
    let stats = spec.run.clone().unwrap_or(Value::Null);
    let began = stats["created_ms"]
        .as_u64()
        .map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .unwrap_or(started);
    let finished = SystemTime::now();
    let record = json!({
        "tool": worker.tool,
        "command_name": "run",
        "command": stats["command"],
        "run_id": stats["id"],
        "host": tessera_io::provenance::hostname(),
        "scheduler": tessera_io::provenance::scheduler_ids(),
        "started_at": tessera_io::provenance::rfc3339(began),
        "finished_at": tessera_io::provenance::rfc3339(finished),
        "wall_s": finished.duration_since(began).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "peak_rss_bytes": tessera_io::provenance::peak_rss_bytes(),
        "inputs": [p.get("input")],
        "workflow": normalized,
        "workflow_sha256": p.get("workflow_sha256"),
        "run": {"tasks": tasks, "workers": workers.len(), "executed": stats["executed"],
                "recovered": stats["reused"], "retries": stats["retries"],
                "stages": p.get("stages"), "input_digest": p.get("input_digest"),
                "task_records": "run/tasks.jsonl",
                "memory_per_task_bytes": p.get("memory_per_task_bytes"), "published_by": worker.id},
        "ro_crate": {"workflow": "run/workflow.json", "parts": [
            {"@id": "run/workflow.json", "@type": "File", "encodingFormat": "application/json",
             "name": if name.is_null() { json!("workflow") } else { name.clone() },
             "description": "the normalized workflow: every default explicit"},
            {"@id": "run/tasks.jsonl", "@type": "File", "encodingFormat": "application/jsonl",
             "name": "provenance record of every task"},
            {"@id": "rois/", "@type": "Dataset", "name": "ROIs, traces, spikes and QC"},
            {"@id": "tasks/", "@type": "Dataset", "name": "every task's output, by content key"},
        ]},
    });
    output.set_provenance(record)?;
    let location = output.finish()?;
    crate::committed_result(&location.to_string(), false).ok_or_else(|| {
        WorkerError::Spec(format!("{location}: no provenance record after publishing"))
    })
}
