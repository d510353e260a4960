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
    /// The output was already committed under the task's key (an earlier attempt or run wrote
    /// it; nothing was computed): commits like `Done`, counted in [`Run::reused`].
    Reused { manifest: String },
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
    /// Tasks committed without computing (reported `Reused`, or `Recovered`).
    #[serde(default)]
    pub reused: usize,
    /// Indices kept in step with the task states, so each event costs time in proportion to what
    /// it touches, not to the size of the run (plans reach millions of tiles).
    index: Index,
}

/// What the scheduler looks up instead of scanning every task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    /// Tasks that depend on each task.
    dependents: Vec<Vec<usize>>,
    /// Per task, how many of its dependencies are not committed yet.
    unmet: Vec<u32>,
    /// Pending tasks whose dependencies are all committed (some may still wait for a backoff).
    ready: std::collections::BTreeSet<usize>,
    /// Leases by expiry: (until, task).
    leases: std::collections::BTreeSet<(Millis, usize)>,
    /// Tasks neither committed nor quarantined.
    open: usize,
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
        let n = tasks.len();
        let mut index = Index {
            dependents: vec![Vec::new(); n],
            unmet: vec![0; n],
            open: n,
            ..Index::default()
        };
        for (i, (_, deps)) in tasks.iter().enumerate() {
            let mut deps = deps.clone();
            deps.sort_unstable();
            deps.dedup();
            index.unmet[i] = deps.len() as u32;
            for d in deps {
                index.dependents[d].push(i);
            }
            if index.unmet[i] == 0 {
                index.ready.insert(i);
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
            reused: 0,
            index,
        };
        // An empty run is over at once.
        let mut actions = Vec::new();
        run.finish_if_done(&mut actions);
        Ok(run)
    }

    /// Whether task `i` may be granted at `now`: pending, past its backoff, every dependency
    /// committed.
    /// When the earliest lease expires, if any task is leased.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.index.leases.first().map(|&(until, _)| until)
    }

    /// Whether a poll at `now` could be granted a task.
    pub fn has_ready(&self, now: Millis) -> bool {
        self.index.ready.iter().any(|&i| self.ready(i, now))
    }

    /// Tasks a poll at `now` could be granted.
    pub fn ready_count(&self, now: Millis) -> usize {
        self.index
            .ready
            .iter()
            .filter(|&&i| self.ready(i, now))
            .count()
    }

    /// Tasks neither committed nor quarantined.
    pub fn open_tasks(&self) -> usize {
        self.index.open
    }

    fn ready(&self, i: usize, now: Millis) -> bool {
        matches!(self.tasks[i].state, TaskState::Pending { not_before } if not_before <= now)
            && self.index.unmet[i] == 0
    }

    /// Recomputes the index from the task states by scanning every task (the slow, obviously
    /// correct definition) and says where the kept one differs.
    #[cfg(test)]
    pub(crate) fn index_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let unmet = t
                .depends_on
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|&&d| !matches!(self.tasks[d].state, TaskState::Committed { .. }))
                .count() as u32;
            if unmet != self.index.unmet[i] {
                errors.push(format!(
                    "task {i}: unmet {} kept, {unmet} counted",
                    self.index.unmet[i]
                ));
            }
            let ready = matches!(t.state, TaskState::Pending { .. }) && unmet == 0;
            if ready != self.index.ready.contains(&i) {
                errors.push(format!("task {i}: ready {ready}, kept the other way"));
            }
            if let TaskState::Leased { until, .. } = t.state
                && !self.index.leases.contains(&(until, i))
            {
                errors.push(format!("task {i}: lease until {until} not kept"));
            }
        }
        let leased = self
            .tasks
            .iter()
            .filter(|t| matches!(t.state, TaskState::Leased { .. }))
            .count();
        if leased != self.index.leases.len() {
            errors.push(format!(
                "{} leases kept, {leased} leased",
                self.index.leases.len()
            ));
        }
        let open = self
            .tasks
            .iter()
            .filter(|t| {
                !matches!(
                    t.state,
                    TaskState::Committed { .. } | TaskState::Quarantined { .. }
                )
            })
            .count();
        if open != self.index.open {
            errors.push(format!("{} open kept, {open} counted", self.index.open));
        }
        errors
    }

    /// Every change of a task's state goes through here, to keep the index in step.
    fn set_state(&mut self, i: usize, state: TaskState) {
        let terminal = |s: &TaskState| {
            matches!(
                s,
                TaskState::Committed { .. } | TaskState::Quarantined { .. }
            )
        };
        let old = std::mem::replace(&mut self.tasks[i].state, state);
        if let TaskState::Leased { until, .. } = old {
            self.index.leases.remove(&(until, i));
        }
        self.index.ready.remove(&i);
        let new = &self.tasks[i].state;
        match new {
            TaskState::Leased { until, .. } => {
                self.index.leases.insert((*until, i));
            }
            TaskState::Pending { .. } if self.index.unmet[i] == 0 => {
                self.index.ready.insert(i);
            }
            _ => {}
        }
        if !terminal(&old) && terminal(new) {
            self.index.open -= 1;
        }
        let committed_now = matches!(new, TaskState::Committed { .. })
            && !matches!(old, TaskState::Committed { .. });
        if committed_now {
            for k in 0..self.index.dependents[i].len() {
                let j = self.index.dependents[i][k];
                self.index.unmet[j] -= 1;
                if self.index.unmet[j] == 0
                    && matches!(self.tasks[j].state, TaskState::Pending { .. })
                {
                    self.index.ready.insert(j);
                }
            }
        }
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
            self.set_state(task, TaskState::Pending { not_before });
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
        self.set_state(
            task,
            TaskState::Quarantined {
                error: error.clone(),
            },
        );
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
                self.set_state(j, TaskState::Quarantined { error: e.clone() });
                actions.push(Action::Quarantined { task: j, error: e });
            }
        }
    }

    /// Ends the run: revokes every lease, records the status.
    fn end(&mut self, status: RunStatus, actions: &mut Vec<Action>) {
        let mut leased: Vec<usize> = self.index.leases.iter().map(|&(_, i)| i).collect();
        leased.sort_unstable();
        for i in leased {
            if let TaskState::Leased { worker, .. } = &self.tasks[i].state {
                actions.push(Action::Revoke {
                    worker: worker.clone(),
                    task: i,
                });
                self.set_state(i, TaskState::Pending { not_before: 0 });
            }
        }
        self.status = status.clone();
        actions.push(Action::Finished(status));
    }

    fn finish_if_done(&mut self, actions: &mut Vec<Action>) {
        if self.status != RunStatus::Running || self.index.open > 0 {
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
            let picks: Vec<usize> = run
                .index
                .ready
                .iter()
                .copied()
                .filter(|&i| run.ready(i, now))
                .take(slots)
                .collect();
            for i in picks {
                {
                    run.last_token += 1;
                    let token = run.last_token;
                    let until = now.saturating_add(run.policy.lease_ttl);
                    run.set_state(
                        i,
                        TaskState::Leased {
                            worker: worker.clone(),
                            token,
                            until,
                        },
                    );
                    run.tasks[i].attempts += 1;
                    actions.push(Action::Grant {
                        worker: worker.clone(),
                        task: i,
                        token,
                        until,
                    });
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
                if let TaskState::Leased { worker, token, .. } = run.tasks[task].state.clone() {
                    run.set_state(
                        task,
                        TaskState::Leased {
                            worker,
                            token,
                            until,
                        },
                    );
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
                    run.set_state(task, TaskState::Committed { manifest });
                    actions.push(Action::Committed { task });
                    run.finish_if_done(&mut actions);
                }
                Outcome::Reused { manifest } => {
                    run.reused += 1;
                    run.set_state(task, TaskState::Committed { manifest });
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
            let mut held: Vec<usize> = run
                .index
                .leases
                .iter()
                .map(|&(_, i)| i)
                .filter(|&i| {
                    matches!(&run.tasks[i].state, TaskState::Leased { worker: w, .. } if *w == worker)
                })
                .collect();
            held.sort_unstable();
            for i in held {
                // Handed back, not failed: the attempt does not count.
                run.set_state(i, TaskState::Pending { not_before: now });
                run.tasks[i].attempts = run.tasks[i].attempts.saturating_sub(1);
            }
        }
        Event::Tick { now } => {
            expire(run, now, &mut actions);
        }
        Event::Cancel { .. } => run.end(RunStatus::Cancelled, &mut actions),
        Event::Recovered { task, manifest } => {
            let deps_done = run.tasks.get(task).is_some_and(|t| {
                matches!(t.state, TaskState::Pending { .. }) && run.index.unmet[task] == 0
            });
            if deps_done {
                run.reused += 1;
                run.set_state(task, TaskState::Committed { manifest });
                actions.push(Action::Committed { task });
                run.finish_if_done(&mut actions);
            }
        }
    }
    actions
}

/// Leases past their time become retryable failures (the worker is presumed lost).
fn expire(run: &mut Run, now: Millis, actions: &mut Vec<Action>) {
    let mut expired: Vec<usize> = run
        .index
        .leases
        .range(..(now.saturating_add(1), 0))
        .map(|&(_, i)| i)
        .collect();
    expired.sort_unstable();
    for i in expired {
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
