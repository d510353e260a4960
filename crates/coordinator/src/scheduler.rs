//! The scheduling state machine of one run: `step(state, event) -> actions`, with no I/O, no clock
//! and no await, so it can be property-tested and replayed from an event log. Durable storage and
//! the gRPC handlers wrap it: they persist each event before acknowledging it and carry out the
//! actions.
//!
//! - Tasks become ready when every task they depend on is committed.
//! - A worker's poll is its heartbeat and asks for work: ready tasks are granted in task order, each
//!   with a lease (TTL from the poll's time) and a fencing token that increases with every grant.
//! - A report or a lease extension counts only with the task's current token: a worker whose lease
//!   expired and was granted to another (a zombie) cannot commit or extend.
//! - Failures are retryable (lost worker, preemption, I/O timeout; also an expired lease) or fatal
//!   (bad data). Retryable ones are retried after an exponential backoff, up to `max_attempts`;
//!   then, and on a fatal failure, the task is quarantined with its error and the run fails (or, with
//!   `allow_missing`, completes with the task reported missing; its dependents are quarantined too).
//! - A worker that announces it is stopping (drain, SIGTERM/SIGUSR1 preemption) gets no more work;
//!   the leases it hands back are requeued without counting an attempt.
//! - Cancellation revokes every lease and ends the run.

use serde::{Deserialize, Serialize};

/// Milliseconds on the coordinator's clock (the caller supplies it with each event).
pub type Millis = u64;

/// How the run treats leases and failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A lease lasts this long after its grant or last extension.
    pub lease_ttl: Millis,
    /// Attempts a task may use (the first included) before it is quarantined.
    pub max_attempts: u32,
    /// Backoff before retry `n` (1-based): `backoff_base * 2^(n-1)`, capped at `backoff_max`.
    pub backoff_base: Millis,
    pub backoff_max: Millis,
    /// Complete the run with quarantined tasks reported missing instead of failing it.
    pub allow_missing: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease_ttl: 30_000,
            max_attempts: 4,
            backoff_base: 1_000,
            backoff_max: 60_000,
            allow_missing: false,
        }
    }
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for dependencies, or for its backoff to pass (`not_before`).
    Pending { not_before: Millis },
    Leased {
        worker: String,
        token: u64,
        until: Millis,
    },
    /// Its output is committed (the manifest digest the worker reported).
    Committed { manifest: String },
    /// Given up: the error, and whether it was fatal.
    Quarantined { error: String },
}

/// One task of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Content key (see the workflow crate's task keys).
    pub key: String,
    /// Indices of the tasks it waits for (each smaller than its own index).
    pub depends_on: Vec<usize>,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
}

/// How a run ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Succeeded,
    /// Completed with these tasks missing (quarantined), as the policy allowed.
    SucceededWithMissing {
        missing: Vec<usize>,
    },
    Failed {
        task: usize,
        error: String,
    },
    Cancelled,
}

/// What a worker says happened to its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Outputs written and their manifest committed (its digest).
    Done { manifest: String },
    /// Worth retrying: lost data source, preemption, I/O timeout.
    Retryable { error: String },
    /// Not worth retrying: bad data.
    Fatal { error: String },
}

/// Everything that can happen to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A worker asks for up to `slots` tasks (and proves it is alive).
    Poll {
        worker: String,
        slots: usize,
        now: Millis,
    },
    Extend {
        worker: String,
        task: usize,
        token: u64,
        now: Millis,
    },
    Report {
        worker: String,
        task: usize,
        token: u64,
        outcome: Outcome,
        now: Millis,
    },
    /// The worker takes no more work and hands back the leases it holds.
    Stopping {
        worker: String,
        now: Millis,
    },
    /// Time passes: expired leases are requeued as retryable failures.
    Tick {
        now: Millis,
    },
    Cancel {
        now: Millis,
    },
    /// The store already holds the task's committed output (found on a restart or a rerun into
    /// the same output, by its content key): it counts as committed without running again. Only
    /// a pending task whose dependencies are committed can be recovered.
    Recovered {
        task: usize,
        manifest: String,
    },
}

/// What the coordinator must do after a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Grant {
        worker: String,
        task: usize,
        token: u64,
        until: Millis,
    },
    Extended {
        task: usize,
        until: Millis,
    },
    /// The call is refused (stale token, unknown task, run over); tell the worker why.
    Reject {
        worker: String,
        reason: String,
    },
    Committed {
        task: usize,
    },
    /// Requeued for another attempt, not before `not_before`.
    Retry {
        task: usize,
        not_before: Millis,
        error: String,
    },
    Quarantined {
        task: usize,
        error: String,
    },
    /// Tell the worker to stop working on the task (cancellation).
    Revoke {
        worker: String,
        task: usize,
    },
    Finished(RunStatus),
}

/// The state of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub policy: Policy,
    pub tasks: Vec<Task>,
    pub status: RunStatus,
    /// The last fencing token granted.
    pub last_token: u64,
    /// Workers that announced they are stopping.
    pub stopping: Vec<String>,
}

/// Why a run cannot be built from the given tasks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("task {task} depends on task {dependency}, which does not come before it")]
    BadDependency { task: usize, dependency: usize },
}

impl Run {
    /// A run of tasks given as (key, dependencies); a dependency must come before its task, so
    /// the graph is acyclic by construction.
    pub fn new(tasks: Vec<(String, Vec<usize>)>, policy: Policy) -> Result<Run, SchedulerError> {
        for (i, (_, deps)) in tasks.iter().enumerate() {
            if let Some(&d) = deps.iter().find(|&&d| d >= i) {
                return Err(SchedulerError::BadDependency {
                    task: i,
                    dependency: d,
                });
            }
        }
        let mut run = Run {
            policy,
            tasks: tasks
                .into_iter()
                .map(|(key, depends_on)| Task {
                    key,
                    depends_on,
                    state: TaskState::Pending { not_before: 0 },
                    attempts: 0,
                })
                .collect(),
            status: RunStatus::Running,
            last_token: 0,
            stopping: Vec::new(),
        };
        // An empty run is over at once.
        let mut actions = Vec::new();
        run.finish_if_done(&mut actions);
        Ok(run)
    }

    fn ready(&self, i: usize, now: Millis) -> bool {
        matches!(self.tasks[i].state, TaskState::Pending { not_before } if not_before <= now)
            && self.tasks[i]
                .depends_on
                .iter()
                .all(|&d| matches!(self.tasks[d].state, TaskState::Committed { .. }))
    }

    fn backoff(&self, attempts: u32) -> Millis {
        let shift = attempts.saturating_sub(1).min(30);
        self.policy
            .backoff_base
            .saturating_mul(1u64 << shift)
            .min(self.policy.backoff_max)
    }

    /// A failed attempt of `task`: retry after a backoff, or quarantine it.
    fn fail(
        &mut self,
        task: usize,
        error: String,
        fatal: bool,
        now: Millis,
        actions: &mut Vec<Action>,
    ) {
        let attempts = self.tasks[task].attempts;
        if !fatal && attempts < self.policy.max_attempts {
            let not_before = now.saturating_add(self.backoff(attempts));
            self.tasks[task].state = TaskState::Pending { not_before };
            actions.push(Action::Retry {
                task,
                not_before,
                error,
            });
        } else {
            self.quarantine(task, error, actions);
        }
    }

    fn quarantine(&mut self, task: usize, error: String, actions: &mut Vec<Action>) {
        self.tasks[task].state = TaskState::Quarantined {
            error: error.clone(),
        };
        actions.push(Action::Quarantined {
            task,
            error: error.clone(),
        });
        if !self.policy.allow_missing {
            self.end(RunStatus::Failed { task, error }, actions);
            return;
        }
        // Its dependents can never run.
        for j in task + 1..self.tasks.len() {
            let blocked = self.tasks[j]
                .depends_on
                .iter()
                .any(|&d| matches!(self.tasks[d].state, TaskState::Quarantined { .. }));
            if blocked && matches!(self.tasks[j].state, TaskState::Pending { .. }) {
                let e = format!("depends on quarantined task {task}");
                self.tasks[j].state = TaskState::Quarantined { error: e.clone() };
                actions.push(Action::Quarantined { task: j, error: e });
            }
        }
    }

    /// Ends the run: revokes every lease, records the status.
    fn end(&mut self, status: RunStatus, actions: &mut Vec<Action>) {
        for i in 0..self.tasks.len() {
            if let TaskState::Leased { worker, .. } = &self.tasks[i].state {
                actions.push(Action::Revoke {
                    worker: worker.clone(),
                    task: i,
                });
                self.tasks[i].state = TaskState::Pending { not_before: 0 };
            }
        }
        self.status = status.clone();
        actions.push(Action::Finished(status));
    }

    fn finish_if_done(&mut self, actions: &mut Vec<Action>) {
        if self.status != RunStatus::Running {
            return;
        }
        let mut missing = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            match t.state {
                TaskState::Committed { .. } => {}
                TaskState::Quarantined { .. } => missing.push(i),
                _ => return,
            }
        }
        let status = if missing.is_empty() {
            RunStatus::Succeeded
        } else {
            RunStatus::SucceededWithMissing { missing }
        };
        self.end(status, actions);
    }

    /// The task's current lease, if `worker` holds it with `token`.
    fn holds(&self, worker: &str, task: usize, token: u64) -> Result<(), String> {
        match self.tasks.get(task).map(|t| &t.state) {
            None => Err(format!("no task {task} in this run")),
            Some(TaskState::Leased {
                worker: w,
                token: t,
                ..
            }) if w == worker && *t == token => Ok(()),
            Some(TaskState::Leased { token: t, .. }) if *t != token => Err(format!(
                "stale lease on task {task}: token {token}, the current one is {t}"
            )),
            Some(_) => Err(format!("task {task} is not leased to {worker}")),
        }
    }
}

/// Applies one event to the run and returns what the coordinator must do.
pub fn step(run: &mut Run, event: Event) -> Vec<Action> {
    let mut actions = Vec::new();
    if run.status != RunStatus::Running {
        match event {
            Event::Poll { worker, .. }
            | Event::Extend { worker, .. }
            | Event::Report { worker, .. } => actions.push(Action::Reject {
                worker,
                reason: format!("the run is over ({:?})", run.status),
            }),
            _ => {}
        }
        return actions;
    }
    match event {
        Event::Poll { worker, slots, now } => {
            expire(run, now, &mut actions);
            if run.status != RunStatus::Running {
                return actions;
            }
            if run.stopping.contains(&worker) {
                actions.push(Action::Reject {
                    worker,
                    reason: "this worker announced it is stopping".into(),
                });
                return actions;
            }
            let mut granted = 0;
            for i in 0..run.tasks.len() {
                if granted >= slots {
                    break;
                }
                if run.ready(i, now) {
                    run.last_token += 1;
                    let token = run.last_token;
                    let until = now.saturating_add(run.policy.lease_ttl);
                    run.tasks[i].state = TaskState::Leased {
                        worker: worker.clone(),
                        token,
                        until,
                    };
                    run.tasks[i].attempts += 1;
                    actions.push(Action::Grant {
                        worker: worker.clone(),
                        task: i,
                        token,
                        until,
                    });
                    granted += 1;
                }
            }
        }
        Event::Extend {
            worker,
            task,
            token,
            now,
        } => match run.holds(&worker, task, token) {
            Ok(()) => {
                let until = now.saturating_add(run.policy.lease_ttl);
                if let TaskState::Leased { until: u, .. } = &mut run.tasks[task].state {
                    *u = until;
                }
                actions.push(Action::Extended { task, until });
            }
            Err(reason) => actions.push(Action::Reject { worker, reason }),
        },
        Event::Report {
            worker,
            task,
            token,
            outcome,
            now,
        } => match run.holds(&worker, task, token) {
            Ok(()) => match outcome {
                Outcome::Done { manifest } => {
                    run.tasks[task].state = TaskState::Committed { manifest };
                    actions.push(Action::Committed { task });
                    run.finish_if_done(&mut actions);
                }
                Outcome::Retryable { error } => {
                    run.fail(task, error, false, now, &mut actions);
                    run.finish_if_done(&mut actions);
                }
                Outcome::Fatal { error } => {
                    run.fail(task, error, true, now, &mut actions);
                    run.finish_if_done(&mut actions);
                }
            },
            Err(reason) => actions.push(Action::Reject { worker, reason }),
        },
        Event::Stopping { worker, now } => {
            if !run.stopping.contains(&worker) {
                run.stopping.push(worker.clone());
            }
            for t in run.tasks.iter_mut() {
                if matches!(&t.state, TaskState::Leased { worker: w, .. } if *w == worker) {
                    // Handed back, not failed: the attempt does not count.
                    t.state = TaskState::Pending { not_before: now };
                    t.attempts = t.attempts.saturating_sub(1);
                }
            }
        }
        Event::Tick { now } => {
            expire(run, now, &mut actions);
        }
        Event::Cancel { .. } => run.end(RunStatus::Cancelled, &mut actions),
        Event::Recovered { task, manifest } => {
            let deps_done = run.tasks.get(task).is_some_and(|t| {
                matches!(t.state, TaskState::Pending { .. })
                    && t.depends_on
                        .iter()
                        .all(|&d| matches!(run.tasks[d].state, TaskState::Committed { .. }))
            });
            if deps_done {
                run.tasks[task].state = TaskState::Committed { manifest };
                actions.push(Action::Committed { task });
                run.finish_if_done(&mut actions);
            }
        }
    }
    actions
}

/// Leases past their time become retryable failures (the worker is presumed lost).
fn expire(run: &mut Run, now: Millis, actions: &mut Vec<Action>) {
    for i in 0..run.tasks.len() {
        if run.status != RunStatus::Running {
            return;
        }
        if let TaskState::Leased { worker, until, .. } = &run.tasks[i].state
            && *until <= now
        {
            let error = format!("lease of worker {worker} expired (lost worker)");
            run.fail(i, error, false, now, actions);
        }
    }
    run.finish_if_done(actions);
}
