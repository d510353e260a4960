//! Durable state: every run's tasks and policy, and every event applied to it, in an SQLite
//! database (`sqlite3 state.db 'select * from events'` shows a run's history). An event is written
//! (and synced) before the state machine applies it, so whatever was acknowledged survives a crash
//! of the coordinator; reopening the database replays each run's events through
//! [`crate::step`] and rebuilds exactly the state it had (the replay property is tested in the
//! scheduler's tests and here on disk).
//!
//! Schema:
//! ```sql
//! runs   (id TEXT PRIMARY KEY, name TEXT, created_ms INTEGER, policy TEXT, payload TEXT)
//! tasks  (run_id TEXT, idx INTEGER, key TEXT, depends_on TEXT, PRIMARY KEY (run_id, idx))
//! events (run_id TEXT, seq INTEGER, event TEXT, PRIMARY KEY (run_id, seq))
//! ```
//! `policy`, `depends_on`, `event` and the run's `payload` (whatever its submitter needs again:
//! for `tessera run`, the workflow and the task specifications' digest) are JSON.

use std::path::Path;

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::scheduler::{Action, Event, Policy, Run, SchedulerError, step};

/// What can go wrong with the durable state.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("state database {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: run {run}: {reason}")]
    Corrupt {
        path: String,
        run: String,
        reason: String,
    },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("state database {path} is locked: {reason}")]
    Locked { path: String, reason: String },
    #[error("a run with id {0} already exists")]
    Exists(String),
    #[error("no run {0} (see `tessera runs`)")]
    UnknownRun(String),
    #[error("{0}")]
    InvalidWorkflow(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// A worker call without the current lease (a zombie's report, a revoked lease).
    #[error("{0}")]
    Rejected(String),
}

/// The state database.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: String,
    /// An exclusive lock on `<path>.lock`, held while the store is open: one coordinator per
    /// state database (a second one would hand out the same tasks again).
    _lock: Option<std::fs::File>,
}

/// A run as reloaded from the database: its replayed state and how many events it has.
#[derive(Debug)]
pub struct StoredRun {
    pub id: String,
    pub name: String,
    pub payload: Value,
    pub run: DurableRun,
}

/// A run whose every event is logged before it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableRun {
    pub id: String,
    pub state: Run,
    /// Events logged so far (the next event's sequence number).
    pub events: u64,
}

impl StateStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<StateStore, CoordinatorError> {
        let p = path.display().to_string();
        let sql = |source| CoordinatorError::Sql {
            path: p.clone(),
            source,
        };
        let lock = if p == ":memory:" {
            None
        } else {
            let lock_path = format!("{p}.lock");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| CoordinatorError::Locked {
                    path: p.clone(),
                    reason: format!("cannot open {lock_path}: {e}"),
                })?;
            file.try_lock().map_err(|e| CoordinatorError::Locked {
                path: p.clone(),
                reason: match e {
                    std::fs::TryLockError::WouldBlock => {
                        "another coordinator (or tessera run) is using it".to_string()
                    }
                    std::fs::TryLockError::Error(e) => format!("cannot lock {lock_path}: {e}"),
                },
            })?;
            Some(file)
        };
        let conn = Connection::open(path).map_err(sql)?;
        // WAL with full sync: a committed event survives a crash or power loss; readers (the
        // sqlite3 CLI) do not block the coordinator.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                 created_ms INTEGER NOT NULL, policy TEXT NOT NULL, payload TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tasks (run_id TEXT NOT NULL, idx INTEGER NOT NULL,
                 key TEXT NOT NULL, depends_on TEXT NOT NULL, PRIMARY KEY (run_id, idx));
             CREATE TABLE IF NOT EXISTS events (run_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 event TEXT NOT NULL, PRIMARY KEY (run_id, seq));
             CREATE TABLE IF NOT EXISTS specs (run_id TEXT NOT NULL, idx INTEGER NOT NULL,
                 spec TEXT NOT NULL, PRIMARY KEY (run_id, idx));",
        )
        .map_err(sql)?;
        Ok(StateStore {
            conn,
            path: p,
            _lock: lock,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> CoordinatorError {
        CoordinatorError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a new run (its tasks and policy) in one transaction and returns it, ready for
    /// events.
    pub fn create_run(
        &mut self,
        id: &str,
        name: &str,
        created_ms: u64,
        tasks: Vec<(String, Vec<usize>)>,
        policy: Policy,
        payload: &Value,
    ) -> Result<DurableRun, CoordinatorError> {
        self.create_run_with_specs(id, name, created_ms, tasks, policy, payload, &[])
    }

    /// [`StateStore::create_run`], also storing each task's specification (`specs[i]` for task
    /// `i`; none when empty), all in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn create_run_with_specs(
        &mut self,
        id: &str,
        name: &str,
        created_ms: u64,
        tasks: Vec<(String, Vec<usize>)>,
        policy: Policy,
        payload: &Value,
        specs: &[String],
    ) -> Result<DurableRun, CoordinatorError> {
        let state = Run::new(tasks, policy.clone())?;
        let tx = self.conn.savepoint().map_err(|e| CoordinatorError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        let exists: i64 = tx
            .query_row("SELECT count(*) FROM runs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(|e| CoordinatorError::Sql {
                path: self.path.clone(),
                source: e,
            })?;
        if exists > 0 {
            return Err(CoordinatorError::Exists(id.to_string()));
        }
        let wrap = |e| CoordinatorError::Sql {
            path: self.path.clone(),
            source: e,
        };
        tx.execute(
            "INSERT INTO runs (id, name, created_ms, policy, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                name,
                created_ms as i64,
                to_json(&policy),
                payload.to_string()
            ],
        )
        .map_err(wrap)?;
        {
            let mut insert = tx
                .prepare("INSERT INTO tasks (run_id, idx, key, depends_on) VALUES (?1, ?2, ?3, ?4)")
                .map_err(wrap)?;
            for (i, t) in state.tasks.iter().enumerate() {
                insert
                    .execute(params![id, i as i64, t.key, to_json(&t.depends_on)])
                    .map_err(wrap)?;
            }
            let mut insert = tx
                .prepare("INSERT INTO specs (run_id, idx, spec) VALUES (?1, ?2, ?3)")
                .map_err(wrap)?;
            for (i, spec) in specs.iter().enumerate() {
                insert.execute(params![id, i as i64, spec]).map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(DurableRun {
            id: id.to_string(),
            state,
            events: 0,
        })
    }

    /// Opens a batch: the events logged until [`StateStore::commit_batch`] are committed (and
    /// synced) together, once. The caller must not acknowledge them before that commit.
    pub fn begin_batch(&mut self) -> Result<(), CoordinatorError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql(e))
    }

    /// Commits the open batch: one write and one sync for all its events.
    pub fn commit_batch(&mut self) -> Result<(), CoordinatorError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))
    }

    /// Logs `event` as the next event of `run`, then applies it: the returned actions may be
    /// acknowledged, the event is on disk.
    pub fn apply(
        &mut self,
        run: &mut DurableRun,
        event: Event,
    ) -> Result<Vec<Action>, CoordinatorError> {
        let text = serde_json::to_string(&event).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO events (run_id, seq, event) VALUES (?1, ?2, ?3)",
                params![run.id, run.events as i64, text],
            )
            .map_err(|e| self.sql(e))?;
        run.events += 1;
        Ok(step(&mut run.state, event))
    }

    /// Logs `events` in one transaction (group commit: one sync for the batch), then applies them
    /// in order; the actions of each event, in order.
    pub fn apply_all(
        &mut self,
        run: &mut DurableRun,
        events: Vec<Event>,
    ) -> Result<Vec<Vec<Action>>, CoordinatorError> {
        let path = self.path.clone();
        let wrap = |source| CoordinatorError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.savepoint().map_err(wrap)?;
        {
            let mut insert = tx
                .prepare("INSERT INTO events (run_id, seq, event) VALUES (?1, ?2, ?3)")
                .map_err(wrap)?;
            for (i, e) in events.iter().enumerate() {
                insert
                    .execute(params![run.id, (run.events + i as u64) as i64, to_json(e)])
                    .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        run.events += events.len() as u64;
        Ok(events
            .into_iter()
            .map(|e| step(&mut run.state, e))
            .collect())
    }

    /// The specification stored for task `idx` of `run`.
    pub fn spec(&self, run: &str, idx: usize) -> Result<Option<String>, CoordinatorError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT spec FROM specs WHERE run_id = ?1 AND idx = ?2",
                params![run, idx as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Every run in the database, each rebuilt by replaying its events in order.
    pub fn load(&self) -> Result<Vec<StoredRun>, CoordinatorError> {
        let corrupt = |run: &str, reason: String| CoordinatorError::Corrupt {
            path: self.path.clone(),
            run: run.to_string(),
            reason,
        };
        let mut runs = Vec::new();
        let mut select = self
            .conn
            .prepare("SELECT id, name, policy, payload FROM runs ORDER BY created_ms, id")
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(String, String, String, String)> = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        for (id, name, policy, payload) in rows {
            let policy: Policy =
                serde_json::from_str(&policy).map_err(|e| corrupt(&id, format!("policy: {e}")))?;
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| corrupt(&id, format!("payload: {e}")))?;
            let mut tasks_q = self
                .conn
                .prepare("SELECT idx, key, depends_on FROM tasks WHERE run_id = ?1 ORDER BY idx")
                .map_err(|e| self.sql(e))?;
            let mut tasks = Vec::new();
            let rows = tasks_q
                .query_map([&id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| self.sql(e))?;
            for row in rows {
                let (idx, key, deps) = row.map_err(|e| self.sql(e))?;
                if idx != tasks.len() as i64 {
                    return Err(corrupt(&id, format!("task {idx} out of order")));
                }
                let deps: Vec<usize> = serde_json::from_str(&deps)
                    .map_err(|e| corrupt(&id, format!("task {idx}: {e}")))?;
                tasks.push((key, deps));
            }
            let mut state = Run::new(tasks, policy)?;
            let mut events_q = self
                .conn
                .prepare("SELECT seq, event FROM events WHERE run_id = ?1 ORDER BY seq")
                .map_err(|e| self.sql(e))?;
            let rows = events_q
                .query_map([&id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(|e| self.sql(e))?;
            let mut events = 0u64;
            for row in rows {
                let (seq, text) = row.map_err(|e| self.sql(e))?;
                if seq != events as i64 {
                    return Err(corrupt(
                        &id,
                        format!("event {seq} where {events} was expected"),
                    ));
                }
                let event: Event = serde_json::from_str(&text)
                    .map_err(|e| corrupt(&id, format!("event {seq}: {e}")))?;
                step(&mut state, event);
                events += 1;
            }
            runs.push(StoredRun {
                id: id.clone(),
                name,
                payload,
                run: DurableRun { id, state, events },
            });
        }
        Ok(runs)
    }
}

/// JSON of a value the store writes (plain data: serialization cannot fail).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
