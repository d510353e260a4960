//! The run's last task: turns the run's output, where every task committed under
//! `tasks/<key>/`, into a result. It copies each path a task publishes (`rois/...`,
//! `summary/...`; the last task in plan order publishing a path wins: QC's acceptance over the
//! merge's), joins the registration tasks' per-frame shifts into `registration/` (one row per
//! frame of the whole movie), writes `run/tasks.jsonl` (every task's record),
//! `run/workflow.json` (the normalized workflow), the root attributes, the run's report
//! (`run/report.html`, tessera-report) and the run's record and RO-Crate, and marks the output
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
    let mut registrations = Vec::new();
    for (input, s) in spec.inputs.iter().zip(&stores) {
        let bytes = s
            .get("provenance/record.json")?
            .ok_or_else(|| WorkerError::Spec(format!("{}: no provenance record", input.uri)))?;
        let record: Value = serde_json::from_slice(&bytes)
            .map_err(|e| WorkerError::Spec(format!("{}: provenance record: {e}", input.uri)))?;
        if let Some(w) = record["worker"].as_str() {
            workers.insert(w.to_string());
        }
        if record["task"]["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("register"))
        {
            let start = record["task"]["tile"]["core"]["t"]["start"].as_u64();
            registrations.push((start.unwrap_or(0), input.uri.as_str(), s));
        }
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    let registered = join_registration(&output, registrations)?;
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
               "input": p.get("input_uri"), "input_array": p.get("input_array"),
               "input_digest": p.get("input_digest"),
               "shape": [spec.movie.shape.t, spec.movie.shape.y, spec.movie.shape.x],
               "frame_rate_hz": spec.context.frame_rate_hz,
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
    let mut record = record;
    if registered && let Some(parts) = record["ro_crate"]["parts"].as_array_mut() {
        parts.push(json!({"@id": "registration/", "@type": "Dataset",
                          "name": "per-frame motion of the whole movie: shifts, peak, clipped; the template"}));
    }
    // The run's report (run/report.html: beside the other records of this attempt, outside the
    // data a rerun must reproduce byte for byte). A report that cannot be drawn does not fail the
    // run: the record says why.
    match tessera_report::render_from(&output, &spec.output, Some(&record), None) {
        Ok(report) => {
            output.write_file("run/report.html", report.html.into_bytes())?;
            if let Some(parts) = record["ro_crate"]["parts"].as_array_mut() {
                parts.push(json!({"@id": "run/report.html", "@type": "File",
                                  "encodingFormat": "text/html",
                                  "name": "the run's report: figures and summary"}));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the run's report was not written");
            record["report_error"] = json!(e.to_string());
        }
    }
    // The NWB file the workflow asks for (`outputs.nwb`), from the results just published. Unlike
    // the report, a file that cannot be written fails the task: the workflow promised it.
    if let Some(nwb) = normalized["outputs"]["nwb"].as_object() {
        let (file, exported) = export_nwb(&output, &spec.output, &record, nwb)?;
        record["nwb"] = json!({"file": file, "identifier": exported.identifier,
                               "rois": exported.rois, "frames": exported.frames});
        if let Some(parts) = record["ro_crate"]["parts"].as_array_mut() {
            parts.push(json!({"@id": file, "@type": "File",
                              "encodingFormat": "application/x-nwb",
                              "name": "the results as an NWB file (pynwb, DANDI)"}));
        }
    }
    output.set_provenance(record)?;
    let location = output.finish()?;
    crate::committed_result(&location.to_string(), false).ok_or_else(|| {
        WorkerError::Spec(format!("{location}: no provenance record after publishing"))
    })
}

/// Writes the NWB file of the workflow's `outputs.nwb` (its `file` and the session's metadata, as
/// the workflow crate validated and normalized them) at the output's root.
fn export_nwb(
    output: &Output,
    run: &str,
    record: &Value,
    nwb: &Map<String, Value>,
) -> Result<(String, tessera_nwb::Exported), WorkerError> {
    let mut fields = nwb.clone();
    let file = fields
        .remove("file")
        .and_then(|f| f.as_str().map(str::to_string))
        .ok_or_else(|| WorkerError::Spec("outputs.nwb has no file name".into()))?;
    let session: tessera_nwb::Session = serde_json::from_value(Value::Object(fields))
        .map_err(|e| WorkerError::Spec(format!("outputs.nwb: {e}")))?;
    let path = output.local_path(&file)?;
    let exported = tessera_nwb::export_from(output, run, Some(record), &path, &session, true)?;
    output.put_file(&file, &path)?;
    Ok((file, exported))
}

/// Writes `registration/{shifts,peak,clipped}` for the whole movie from the registration tasks'
/// pieces (each covers its run of frames, in order) and `registration/template` (every task
/// builds the same one). Nothing (false) for a workflow without registration.
fn join_registration(
    output: &Output,
    mut pieces: Vec<(u64, &str, &Store)>,
) -> Result<bool, WorkerError> {
    if pieces.is_empty() {
        return Ok(false);
    }
    pieces.sort_by_key(|p| p.0);
    let mut shifts: Vec<f32> = Vec::new();
    let mut peak: Vec<f32> = Vec::new();
    let mut clipped: Vec<u8> = Vec::new();
    let mut frames = 0u64;
    for (start, uri, store) in &pieces {
        if *start != frames {
            return Err(WorkerError::Spec(format!(
                "{uri}: registration starts at frame {start}, expected {frames}"
            )));
        }
        let s = store.read_array::<f32>("registration/shifts")?;
        let n = s.shape().first().copied().unwrap_or(0);
        if s.shape() != [n, 2] {
            return Err(WorkerError::Spec(format!(
                "{uri}: registration/shifts is {:?}, expected (t, 2)",
                s.shape()
            )));
        }
        shifts.extend(s.iter());
        let p = store.read_array::<f32>("registration/peak")?;
        let c = store.read_array::<u8>("registration/clipped")?;
        if p.len() != n || c.len() != n {
            return Err(WorkerError::Spec(format!(
                "{uri}: registration/peak or clipped does not have {n} frames"
            )));
        }
        peak.extend(p.iter());
        clipped.extend(c.iter());
        frames += n as u64;
    }
    let t = peak.len();
    let none = Map::new;
    let shape_err = |e: ndarray::ShapeError| WorkerError::Internal(e.to_string());
    output.write_group_at("registration", Map::new())?;
    let shifts = ndarray::Array2::from_shape_vec((t, 2), shifts).map_err(shape_err)?;
    output.write_array(
        "registration/shifts",
        &shifts.into_dyn(),
        &["t", "axis"],
        none(),
    )?;
    let peak = ndarray::Array1::from_vec(peak);
    output.write_array("registration/peak", &peak.into_dyn(), &["t"], none())?;
    let clipped = ndarray::Array1::from_vec(clipped);
    output.write_array("registration/clipped", &clipped.into_dyn(), &["t"], none())?;
    let template = pieces[0].2.read_array::<f32>("registration/template")?;
    output.write_array("registration/template", &template, &["y", "x"], none())?;
    Ok(true)
}
