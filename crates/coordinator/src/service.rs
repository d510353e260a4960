//! The coordinator's logic behind its RPCs, free of any transport: submitted workflows become
//! runs (planned here, from a description of the recording: the coordinator never reads
//! pixels), polls become grants across every running run, reports and lease extensions go
//! through the scheduling state machine, and every event is logged in the [`StateStore`]
//! before its effect is returned. The gRPC handlers (`crate::grpc`) are thin wrappers; tests
//! and benchmarks drive this directly.
//!
//! Clock: milliseconds since the Unix epoch, passed in by the caller, so leases granted before a
//! restart keep their meaning after it.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use tessera_core::task::RecordingInput;
use tessera_workflow::{RunOptions, RunTasks};

use crate::CoordinatorError;
use crate::scheduler::{Action, Event, Millis, Outcome, Policy, RunStatus, TaskState};
use crate::store::{DurableRun, StateStore};

/// How the coordinator treats leases and retries (per run; the workflow sets the attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub lease_ttl_ms: Millis,
    pub backoff_base_ms: Millis,
    pub backoff_max_ms: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_ttl_ms: 30_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

/// A run to plan and start.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The workflow file's text and name (for errors).
    pub workflow_yaml: String,
    pub workflow_file: String,
    pub recording: RecordingInput,
    /// The run's output location, absolute.
    pub output: String,
    pub memory_budget: Option<u64>,
    pub tile_size: Option<u64>,
    /// The submitting command line (for the run's record).
    pub command: String,
}

/// What a submission became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: String,
    /// An unfinished run of the same workflow, recording and output was resumed.
    pub attached: bool,
    pub tasks: usize,
    pub warnings: Vec<String>,
}

/// A task granted to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub run_id: String,
    pub task: usize,
    pub token: u64,
    /// The task's specification (JSON).
    pub spec_json: String,
    /// Manifest digest committed by each task it waits for, by key.
    pub input_manifests: Vec<(String, String)>,
    pub ttl_ms: Millis,
    /// The run's statistics, for its last task (the publish task).
    pub run_json: Option<String>,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: String,
    pub name: String,
    /// `running`, `succeeded`, `succeeded_with_missing`, `failed` or `cancelled`.
    pub state: &'static str,
    pub error: String,
    pub tasks: usize,
    pub committed: usize,
    pub reused: usize,
    pub leased: usize,
    pub quarantined: usize,
    pub retries: u64,
    pub created_ms: u64,
    pub output: String,
}

impl RunSummary {
    pub fn finished(&self) -> bool {
        self.state != "running"
    }
}

#[derive(Debug)]
struct Entry {
    durable: DurableRun,
    name: String,
    payload: Value,
}

impl Entry {
    fn output(&self) -> &str {
        self.payload["output"].as_str().unwrap_or_default()
    }
}

/// The coordinator: every run in the state database, resumed when it opens.
#[derive(Debug)]
pub struct Coordinator {
    store: StateStore,
    runs: Vec<Entry>,
    by_id: HashMap<String, usize>,
    settings: Settings,
    durations: Durations,
}

impl Coordinator {
    /// Opens the state database at `path` (creating it) and resumes every run in it: each is
    /// rebuilt by replaying its events, so unfinished runs go on where they stopped and no
    /// committed task runs again.
    pub fn open(path: &Path, settings: Settings) -> Result<Coordinator, CoordinatorError> {
        let store = StateStore::open(path)?;
        let mut runs = Vec::new();
        let mut by_id = HashMap::new();
        for r in store.load()? {
            by_id.insert(r.id.clone(), runs.len());
            runs.push(Entry {
                durable: r.run,
                name: r.name,
                payload: r.payload,
            });
        }
        Ok(Coordinator {
            store,
            runs,
            by_id,
            settings,
            durations: Durations::default(),
        })
    }

    /// Opens a group commit: what the following calls log is committed by
    /// [`Coordinator::commit_batch`] in one transaction (one sync), and must not be acknowledged
    /// before it.
    pub fn begin_batch(&mut self) -> Result<(), CoordinatorError> {
        self.store.begin_batch()
    }

    pub fn commit_batch(&mut self) -> Result<(), CoordinatorError> {
        self.store.commit_batch()
    }

    /// Runs not finished yet.
    pub fn unfinished(&self) -> usize {
        self.runs
            .iter()
            .filter(|e| e.durable.state.status == RunStatus::Running)
            .count()
    }

    /// Hands back every lease in the database (for an embedded coordinator, whose earlier
    /// process and its workers are gone): the tasks go back to the queue at once, without
    /// waiting for the leases to expire and without counting an attempt. Returns how many.
    pub fn release_all_leases(&mut self, now: Millis) -> Result<usize, CoordinatorError> {
        let mut released = 0;
        for e in &mut self.runs {
            if e.durable.state.status != RunStatus::Running {
                continue;
            }
            let mut holders: Vec<String> = e
                .durable
                .state
                .tasks
                .iter()
                .filter_map(|t| match &t.state {
                    TaskState::Leased { worker, .. } => Some(worker.clone()),
                    _ => None,
                })
                .collect();
            released += holders.len();
            holders.sort();
            holders.dedup();
            for worker in holders {
                self.store
                    .apply(&mut e.durable, Event::Stopping { worker, now })?;
            }
        }
        Ok(released)
    }

    /// Validates the workflow, plans it on the recording and starts the run (or attaches to an
    /// unfinished run of the same workflow and recording writing the same output).
    pub fn submit(&mut self, s: Submission, now: Millis) -> Result<Submitted, CoordinatorError> {
        let w = tessera_workflow::parse(&s.workflow_yaml, &s.workflow_file)
            .map_err(|e| CoordinatorError::InvalidWorkflow(e.to_string()))?;
        if s.output.is_empty() {
            return Err(CoordinatorError::InvalidRequest("output: empty".into()));
        }
        let options = RunOptions {
            output: s.output.trim_end_matches('/').to_string(),
            memory_budget: s.memory_budget,
            tile_size: s.tile_size,
        };
        let RunTasks {
            specs,
            deps,
            warnings,
            ..
        } = tessera_workflow::run_tasks(&w, &s.workflow_file, &s.recording, &options)
            .map_err(|e| CoordinatorError::InvalidWorkflow(e.to_string()))?;
        // The publish task's key covers every task's key: equal keys, equal runs.
        let last_key = specs.last().map(|t| t.key.clone()).unwrap_or_default();
        for e in &self.runs {
            if e.durable.state.status == RunStatus::Running && e.output() == options.output {
                let same =
                    e.durable.state.tasks.last().map(|t| t.key.as_str()) == Some(last_key.as_str());
                if same {
                    return Ok(Submitted {
                        run_id: e.durable.id.clone(),
                        attached: true,
                        tasks: e.durable.state.tasks.len(),
                        warnings,
                    });
                }
                return Err(CoordinatorError::Conflict(format!(
                    "{} is being written by run {} (another workflow or recording): cancel it or choose another output",
                    options.output, e.durable.id
                )));
            }
        }
        let name = w.metadata.name.clone().unwrap_or_else(|| "workflow".into());
        let policy = Policy {
            lease_ttl: self.settings.lease_ttl_ms,
            max_attempts: w.resources.retries + 1,
            backoff_base: self.settings.backoff_base_ms,
            backoff_max: self.settings.backoff_max_ms,
            allow_missing: false,
        };
        let payload = json!({"output": options.output, "input": s.recording.uri,
            "input_digest": s.recording.digest, "workflow_file": s.workflow_file,
            "command": s.command});
        let tasks = specs
            .iter()
            .zip(deps)
            .map(|(t, d)| {
                (
                    t.key.clone(),
                    d,
                    serde_json::to_string(t).unwrap_or_default(),
                )
            })
            .collect();
        let (run_id, tasks) = self.start_run(&name, payload, tasks, policy, now)?;
        Ok(Submitted {
            run_id,
            attached: false,
            tasks,
            warnings,
        })
    }

    /// Starts a run of planned tasks, each given as (key, the tasks it waits for, its
    /// specification as the worker will receive it). `payload` must name the run's `output`.
    /// Returns the run's id and its task count.
    pub fn start_run(
        &mut self,
        name: &str,
        mut payload: Value,
        tasks: Vec<(String, Vec<usize>, String)>,
        policy: Policy,
        now: Millis,
    ) -> Result<(String, usize), CoordinatorError> {
        let last_key = tasks.last().map(|t| t.0.clone()).unwrap_or_default();
        let mut id = format!("run-{now}-{}", &last_key[..8.min(last_key.len())]);
        while self.by_id.contains_key(&id) {
            id.push('x');
        }
        if let Some(p) = payload.as_object_mut() {
            p.insert("created_ms".into(), json!(now));
        }
        let (tasks, specs): (Vec<_>, Vec<_>) =
            tasks.into_iter().map(|(k, d, s)| ((k, d), s)).unzip();
        let durable = self
            .store
            .create_run_with_specs(&id, name, now, tasks, policy, &payload, &specs)?;
        let n = durable.state.tasks.len();
        self.by_id.insert(id.clone(), self.runs.len());
        self.runs.push(Entry {
            durable,
            name: name.to_string(),
            payload,
        });
        Ok((id, n))
    }

    fn entry(&self, run: &str) -> Result<usize, CoordinatorError> {
        self.by_id
            .get(run)
            .copied()
            .ok_or_else(|| CoordinatorError::UnknownRun(run.to_string()))
    }

    /// Grants up to `slots` tasks to `worker`, from the oldest running run first.
    pub fn poll(
        &mut self,
        worker: &str,
        slots: usize,
        now: Millis,
    ) -> Result<Vec<Grant>, CoordinatorError> {
        let mut grants = Vec::new();
        for ei in 0..self.runs.len() {
            if grants.len() >= slots {
                break;
            }
            let e = &mut self.runs[ei];
            let state = &e.durable.state;
            // A poll is logged only when it can change something (grant or expire): idle polls
            // are heartbeats and leave the log alone.
            if state.status != RunStatus::Running
                || !(state.has_ready(now) || state.next_expiry().is_some_and(|t| t <= now))
            {
                continue;
            }
            let actions = self.store.apply(
                &mut e.durable,
                Event::Poll {
                    worker: worker.to_string(),
                    slots: slots - grants.len(),
                    now,
                },
            )?;
            for a in actions {
                if let Action::Grant {
                    task, token, until, ..
                } = a
                {
                    self.durations.granted.insert((ei, task), now);
                    grants.push(self.grant(ei, task, token, until.saturating_sub(now))?);
                }
            }
        }
        Ok(grants)
    }

    fn grant(
        &self,
        ei: usize,
        task: usize,
        token: u64,
        ttl_ms: Millis,
    ) -> Result<Grant, CoordinatorError> {
        let e = &self.runs[ei];
        let run = &e.durable.state;
        let spec_json =
            self.store
                .spec(&e.durable.id, task)?
                .ok_or_else(|| CoordinatorError::Corrupt {
                    path: String::new(),
                    run: e.durable.id.clone(),
                    reason: format!("task {task} has no specification"),
                })?;
        let input_manifests = run.tasks[task]
            .depends_on
            .iter()
            .filter_map(|&d| match &run.tasks[d].state {
                TaskState::Committed { manifest } => {
                    Some((run.tasks[d].key.clone(), manifest.clone()))
                }
                _ => None,
            })
            .collect();
        let run_json = (task + 1 == run.tasks.len()).then(|| {
            let s = summarize(e);
            json!({"id": e.durable.id, "created_ms": e.payload["created_ms"],
                   "command": e.payload["command"], "executed": s.committed - s.reused,
                   "reused": s.reused, "retries": s.retries})
            .to_string()
        });
        Ok(Grant {
            run_id: e.durable.id.clone(),
            task,
            token,
            spec_json,
            input_manifests,
            ttl_ms,
            run_json,
        })
    }

    /// Extends a lease; `Err(reason)` inside: the lease is gone (stop the task).
    pub fn extend(
        &mut self,
        worker: &str,
        run: &str,
        task: usize,
        token: u64,
        now: Millis,
    ) -> Result<Result<Millis, String>, CoordinatorError> {
        let ei = self.entry(run)?;
        let e = &mut self.runs[ei];
        let actions = self.store.apply(
            &mut e.durable,
            Event::Extend {
                worker: worker.to_string(),
                task,
                token,
                now,
            },
        )?;
        for a in actions {
            match a {
                Action::Extended { until, .. } => return Ok(Ok(until.saturating_sub(now))),
                Action::Reject { reason, .. } => return Ok(Err(reason)),
                _ => {}
            }
        }
        Ok(Err("the lease was not extended".into()))
    }

    /// Takes a worker's report; a report without the current lease (a zombie's) is refused.
    pub fn report(
        &mut self,
        worker: &str,
        run: &str,
        task: usize,
        token: u64,
        outcome: Outcome,
        now: Millis,
    ) -> Result<(), CoordinatorError> {
        let ei = self.entry(run)?;
        let e = &mut self.runs[ei];
        if task >= e.durable.state.tasks.len() {
            return Err(CoordinatorError::InvalidRequest(format!(
                "run {run} has no task {task}"
            )));
        }
        let actions = self.store.apply(
            &mut e.durable,
            Event::Report {
                worker: worker.to_string(),
                task,
                token,
                outcome,
                now,
            },
        )?;
        for a in actions {
            match a {
                Action::Reject { reason, .. } => {
                    return Err(CoordinatorError::Rejected(format!(
                        "report of task {task} of run {run} refused: {reason}"
                    )));
                }
                Action::Committed { task } => self.durations.observe((ei, task), now),
                _ => {}
            }
        }
        Ok(())
    }

    /// The worker takes no more work: its leases go back to the queue.
    pub fn stopping(&mut self, worker: &str, now: Millis) -> Result<(), CoordinatorError> {
        for e in &mut self.runs {
            if e.durable.state.status == RunStatus::Running {
                self.store.apply(
                    &mut e.durable,
                    Event::Stopping {
                        worker: worker.to_string(),
                        now,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Requeues expired leases; whether anything changed.
    pub fn tick(&mut self, now: Millis) -> Result<bool, CoordinatorError> {
        let mut changed = false;
        for e in &mut self.runs {
            let s = &e.durable.state;
            if s.status == RunStatus::Running && s.next_expiry().is_some_and(|t| t <= now) {
                self.store.apply(&mut e.durable, Event::Tick { now })?;
                changed = true;
            }
        }
        Ok(changed)
    }

    pub fn cancel(&mut self, run: &str, now: Millis) -> Result<RunSummary, CoordinatorError> {
        let ei = self.entry(run)?;
        let e = &mut self.runs[ei];
        if e.durable.state.status == RunStatus::Running {
            self.store.apply(&mut e.durable, Event::Cancel { now })?;
        }
        Ok(summarize(&self.runs[ei]))
    }

    pub fn get(&self, run: &str) -> Result<RunSummary, CoordinatorError> {
        Ok(summarize(&self.runs[self.entry(run)?]))
    }

    pub fn list(&self) -> Vec<RunSummary> {
        self.runs.iter().map(summarize).collect()
    }

    /// The operators' view in the Prometheus text format (version 0.0.4): runs by state, tasks
    /// of unfinished runs by state, the queue (tasks ready to grant), leases, retries, events
    /// logged, and how long committed tasks held their lease (a histogram, since this process
    /// started).
    pub fn metrics_text(&self, now: Millis) -> String {
        let mut runs_by_state: std::collections::BTreeMap<&str, usize> = [
            "running",
            "succeeded",
            "succeeded_with_missing",
            "failed",
            "cancelled",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        let (mut pending, mut leased, mut committed, mut quarantined) = (0, 0, 0, 0);
        let (mut ready, mut retries, mut events) = (0usize, 0u64, 0u64);
        for e in &self.runs {
            let s = summarize(e);
            *runs_by_state.entry(s.state).or_default() += 1;
            retries += s.retries;
            events += e.durable.events;
            if s.state == "running" {
                leased += s.leased;
                committed += s.committed;
                quarantined += s.quarantined;
                pending += s.tasks - s.leased - s.committed - s.quarantined;
                ready += e.durable.state.ready_count(now);
            }
        }
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        family(
            "tessera_runs",
            "gauge",
            "Runs in the state database, by state.",
            runs_by_state
                .iter()
                .map(|(s, n)| (format!("{{state=\"{s}\"}}"), n.to_string()))
                .collect(),
        );
        family(
            "tessera_tasks",
            "gauge",
            "Tasks of unfinished runs, by state.",
            [
                ("pending", pending),
                ("leased", leased),
                ("committed", committed),
                ("quarantined", quarantined),
            ]
            .iter()
            .map(|(s, n)| (format!("{{state=\"{s}\"}}"), n.to_string()))
            .collect(),
        );
        family(
            "tessera_queue_depth",
            "gauge",
            "Tasks ready to be granted now (dependencies committed, no backoff pending).",
            vec![(String::new(), ready.to_string())],
        );
        family(
            "tessera_leases",
            "gauge",
            "Leases held by workers.",
            vec![(String::new(), leased.to_string())],
        );
        family(
            "tessera_retries_total",
            "counter",
            "Task attempts beyond each task's first, over every run.",
            vec![(String::new(), retries.to_string())],
        );
        family(
            "tessera_events_total",
            "counter",
            "Scheduling events logged, over every run.",
            vec![(String::new(), events.to_string())],
        );
        let mut cumulative = 0u64;
        let mut samples: Vec<(String, String)> = LEASE_BUCKETS_S
            .iter()
            .zip(&self.durations.counts)
            .map(|(le, n)| {
                cumulative += n;
                (format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string())
            })
            .collect();
        samples.push((
            "_bucket{le=\"+Inf\"}".into(),
            self.durations.count.to_string(),
        ));
        samples.push(("_sum".into(), format!("{:.3}", self.durations.sum_s)));
        samples.push(("_count".into(), self.durations.count.to_string()));
        family(
            "tessera_task_seconds",
            "histogram",
            "From grant to committed report, per task (since this coordinator started).",
            samples,
        );
        out
    }
}

/// Upper bounds (seconds) of the task duration histogram's buckets.
const LEASE_BUCKETS_S: [f64; 8] = [0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0];

/// Task durations (grant to committed report) observed since the coordinator started.
#[derive(Debug, Default)]
struct Durations {
    counts: [u64; 8],
    count: u64,
    sum_s: f64,
    /// Grant time of each leased task, by (run index, task).
    granted: HashMap<(usize, usize), Millis>,
}

impl Durations {
    fn observe(&mut self, key: (usize, usize), now: Millis) {
        if let Some(t) = self.granted.remove(&key) {
            let s = now.saturating_sub(t) as f64 / 1000.0;
            if let Some(i) = LEASE_BUCKETS_S.iter().position(|&le| s <= le) {
                self.counts[i] += 1;
            }
            self.count += 1;
            self.sum_s += s;
        }
    }
}

fn summarize(e: &Entry) -> RunSummary {
    let run = &e.durable.state;
    let (mut committed, mut leased, mut quarantined, mut attempts, mut ran) = (0, 0, 0, 0u64, 0u64);
    for t in &run.tasks {
        match t.state {
            TaskState::Committed { .. } => committed += 1,
            TaskState::Leased { .. } => leased += 1,
            TaskState::Quarantined { .. } => quarantined += 1,
            TaskState::Pending { .. } => {}
        }
        attempts += u64::from(t.attempts);
        ran += u64::from(t.attempts > 0);
    }
    let (state, error) = match &run.status {
        RunStatus::Running => ("running", String::new()),
        RunStatus::Succeeded => ("succeeded", String::new()),
        RunStatus::SucceededWithMissing { missing } => (
            "succeeded_with_missing",
            format!("{} task(s) missing", missing.len()),
        ),
        RunStatus::Failed { error, .. } => ("failed", error.clone()),
        RunStatus::Cancelled => ("cancelled", String::new()),
    };
    RunSummary {
        run_id: e.durable.id.clone(),
        name: e.name.clone(),
        state,
        error,
        tasks: run.tasks.len(),
        committed,
        reused: run.reused,
        leased,
        quarantined,
        retries: attempts.saturating_sub(ran),
        created_ms: e.payload["created_ms"].as_u64().unwrap_or(0),
        output: e.output().to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const WORKFLOW: &str = include_str!("../../../workflows/two-photon.yaml");

    fn submission(output: &str, digest: char) -> Submission {
        Submission {
            workflow_yaml: WORKFLOW.into(),
            workflow_file: "two-photon.yaml".into(),
            recording: RecordingInput {
                uri: "/data/rec.zarr".into(),
                array: "movie".into(),
                shape: tessera_core::Shape3 {
                    t: 300,
                    y: 64,
                    x: 64,
                },
                chunks: [100, 64, 64],
                meta: tessera_core::RecordingMeta {
                    frame_rate_hz: Some(30.0),
                    ..Default::default()
                },
                digest: digest.to_string().repeat(64),
                described: json!({}),
            },
            output: output.into(),
            memory_budget: None,
            tile_size: Some(32),
            command: "test".into(),
        }
    }

    /// Polls and reports `Done` until nothing is granted; returns the tasks run.
    fn drain(c: &mut Coordinator, worker: &str, now: &mut Millis) -> Vec<(String, usize)> {
        let mut ran = Vec::new();
        loop {
            *now += 1;
            let grants = c.poll(worker, 4, *now).unwrap();
            if grants.is_empty() {
                return ran;
            }
            for g in grants {
                let spec: tessera_core::task::TaskSpec =
                    serde_json::from_str(&g.spec_json).unwrap();
                // Every input's manifest is known when the task is granted.
                for input in &spec.inputs {
                    assert!(
                        g.input_manifests.iter().any(|(k, _)| *k == input.key),
                        "{} granted before its input {}",
                        spec.key,
                        input.key
                    );
                }
                c.report(
                    worker,
                    &g.run_id,
                    g.task,
                    g.token,
                    Outcome::Done {
                        manifest: format!("m-{}", spec.key),
                    },
                    *now,
                )
                .unwrap();
                ran.push((g.run_id, g.task));
            }
        }
    }

    #[test]
    fn runs_are_planned_granted_resumed_after_a_restart_and_attached_to() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mut now = 1_000;
        let mut c = Coordinator::open(&db, Settings::default()).unwrap();
        let s = c.submit(submission("/out/a", 'a'), now).unwrap();
        assert!(!s.attached);
        let tasks = s.tasks;
        // Same workflow, recording and output: attached. Another recording: refused.
        let again = c.submit(submission("/out/a", 'a'), now).unwrap();
        assert!(again.attached && again.run_id == s.run_id);
        assert!(matches!(
            c.submit(submission("/out/a", 'b'), now),
            Err(CoordinatorError::Conflict(_))
        ));
        // A bad workflow names its line.
        let mut bad = submission("/out/b", 'a');
        bad.workflow_yaml =
            "apiVersion: tessera/v1\nkind: Workflow\nstages:\n  - uses: detekt\n".into();
        match c.submit(bad, now) {
            Err(CoordinatorError::InvalidWorkflow(e)) => {
                assert!(e.contains("two-photon.yaml:4:"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // Run a task, hold the next one's lease, and "crash".
        now += 1;
        let first = c.poll("w1", 1, now).unwrap();
        assert_eq!(first.len(), 1);
        c.report(
            "w1",
            &s.run_id,
            first[0].task,
            first[0].token,
            Outcome::Done {
                manifest: "m0".into(),
            },
            now,
        )
        .unwrap();
        let held = c.poll("w1", 1, now).unwrap().remove(0);
        drop(c);

        // Reopened: the run is resumed with its committed task and its lease.
        let mut c = Coordinator::open(&db, Settings::default()).unwrap();
        assert_eq!(c.unfinished(), 1);
        let info = c.get(&s.run_id).unwrap();
        assert_eq!((info.committed, info.leased), (1, 1));
        // A zombie's report with an old token is refused; the holder's counts.
        assert!(matches!(
            c.report(
                "w1",
                &s.run_id,
                held.task,
                held.token + 100,
                Outcome::Done {
                    manifest: "x".into()
                },
                now
            ),
            Err(CoordinatorError::Rejected(_))
        ));
        // An embedded restart hands the lease back without counting an attempt.
        assert_eq!(c.release_all_leases(now).unwrap(), 1);
        let ran = drain(&mut c, "w2", &mut now);
        assert_eq!(
            ran.len(),
            tasks - 1,
            "every task but the committed one runs once"
        );
        let info = c.get(&s.run_id).unwrap();
        assert_eq!(info.state, "succeeded");
        assert_eq!((info.committed, info.retries), (tasks, 0));
        // An unknown run is named as such.
        assert!(matches!(
            c.get("run-nope"),
            Err(CoordinatorError::UnknownRun(_))
        ));
    }

    #[test]
    fn polls_serve_the_oldest_run_first_and_cancel_ends_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Coordinator::open(&dir.path().join("s.db"), Settings::default()).unwrap();
        let mut now = 5;
        let a = c.submit(submission("/out/a", 'a'), now).unwrap();
        let b = c.submit(submission("/out/b", 'b'), now + 1).unwrap();
        now += 2;
        let g = c.poll("w", 1, now).unwrap();
        assert_eq!(g[0].run_id, a.run_id);
        let info = c.cancel(&a.run_id, now).unwrap();
        assert_eq!(info.state, "cancelled");
        let g = c.poll("w", 1, now).unwrap();
        assert_eq!(g[0].run_id, b.run_id);
        let done = Outcome::Done {
            manifest: "m".into(),
        };
        c.report("w", &b.run_id, g[0].task, g[0].token, done, now)
            .unwrap();
        let ran = drain(&mut c, "w", &mut now);
        let last = ran.last().unwrap();
        assert_eq!(last.0, b.run_id);
        assert_eq!(c.get(&b.run_id).unwrap().state, "succeeded");
        assert_eq!(c.list().len(), 2);
    }
}
