//! Properties of the scheduler under random event sequences: every task is committed at most once
//! and only after its dependencies, fencing tokens only grow, stale reports change nothing, a run
//! with reliable workers finishes with every task committed exactly once, and replaying the event
//! log gives the same state.

use proptest::prelude::*;

use crate::scheduler::*;

/// A diamond-ish plan: stage 0 of `a` tasks, stage 1 of `b` tasks each depending on two of stage 0.
fn plan(a: usize, b: usize) -> Vec<(String, Vec<usize>)> {
    let mut tasks: Vec<(String, Vec<usize>)> =
        (0..a).map(|i| (format!("s0-{i}"), vec![])).collect();
    for j in 0..b {
        tasks.push((format!("s1-{j}"), vec![j % a, (j + 1) % a]));
    }
    tasks
}

fn policy() -> Policy {
    Policy {
        lease_ttl: 100,
        max_attempts: 3,
        backoff_base: 10,
        backoff_max: 50,
        allow_missing: false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Poll(usize, usize),
    /// Worker reports on the n-th lease it holds: 0 done, 1 retryable, 2 fatal.
    Report(usize, usize, u8),
    /// A report with a made-up token for some task.
    Stale(usize, usize, u64),
    Extend(usize, usize),
    Tick(u64),
    Stopping(usize),
    Cancel,
    /// The store is found to hold task n's committed output.
    Recover(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..4usize).prop_map(|(w, s)| Op::Poll(w, s)),
        6 => (0..3usize, 0..3usize, prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(w, n, o)| Op::Report(w, n, o)),
        2 => (0..3usize, 0..12usize, 0..40u64).prop_map(|(w, t, k)| Op::Stale(w, t, k)),
        2 => (0..3usize, 0..3usize).prop_map(|(w, n)| Op::Extend(w, n)),
        3 => (0..150u64).prop_map(Op::Tick),
        1 => (0..3usize).prop_map(Op::Stopping),
        1 => Just(Op::Cancel),
        1 => (0..12usize).prop_map(Op::Recover),
    ]
}

/// Turns ops into events against the current state (reports use the leases workers really hold).
fn event(run: &Run, op: &Op, now: &mut Millis) -> Event {
    let name = |w: usize| format!("w{w}");
    let held = |w: usize| -> Vec<(usize, u64)> {
        run.tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.state {
                TaskState::Leased { worker, token, .. } if *worker == name(w) => Some((i, *token)),
                _ => None,
            })
            .collect()
    };
    match op {
        Op::Poll(w, s) => Event::Poll {
            worker: name(*w),
            slots: *s,
            now: *now,
        },
        Op::Report(w, n, o) => {
            let h = held(*w);
            match h.get(*n % h.len().max(1)) {
                Some(&(task, token)) => Event::Report {
                    worker: name(*w),
                    task,
                    token,
                    outcome: match o {
                        0 => Outcome::Done {
                            manifest: format!("m{task}"),
                        },
                        1 => Outcome::Retryable {
                            error: "preempted".into(),
                        },
                        _ => Outcome::Fatal {
                            error: "bad data".into(),
                        },
                    },
                    now: *now,
                },
                None => Event::Tick { now: *now },
            }
        }
        Op::Stale(w, t, k) => {
            // A token that is not the task's current one.
            let current = match run.tasks.get(*t).map(|x| &x.state) {
                Some(TaskState::Leased { token, .. }) => *token,
                _ => u64::MAX,
            };
            let token = if *k == current { k + 1000 } else { *k };
            Event::Report {
                worker: name(*w),
                task: *t,
                token,
                outcome: Outcome::Done {
                    manifest: "zombie".into(),
                },
                now: *now,
            }
        }
        Op::Extend(w, n) => {
            let h = held(*w);
            match h.get(*n % h.len().max(1)) {
                Some(&(task, token)) => Event::Extend {
                    worker: name(*w),
                    task,
                    token,
                    now: *now,
                },
                None => Event::Tick { now: *now },
            }
        }
        Op::Tick(dt) => {
            *now += dt;
            Event::Tick { now: *now }
        }
        Op::Stopping(w) => Event::Stopping {
            worker: name(*w),
            now: *now,
        },
        Op::Cancel => Event::Cancel { now: *now },
        Op::Recover(t) => Event::Recovered {
            task: *t,
            manifest: format!("m{t}"),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_event_sequences_keep_the_invariants(
        ops in prop::collection::vec(op(), 0..200),
        allow_missing in any::<bool>(),
    ) {
        let policy = Policy { allow_missing, ..policy() };
        let mut run = Run::new(plan(4, 6), policy.clone()).unwrap();
        let mut now: Millis = 0;
        let mut committed = vec![0usize; run.tasks.len()];
        let mut last_token = 0u64;
        let mut log = Vec::new();
        let mut finished = 0;
        for op in &ops {
            let ev = event(&run, op, &mut now);
            let before = run.clone();
            let stale = matches!(op, Op::Stale(..));
            log.push(ev.clone());
            let actions = step(&mut run, ev);
            let errors = run.index_errors();
            prop_assert!(errors.is_empty(), "index out of step: {:?}", errors);
            if stale {
                // A zombie's report changes nothing and is refused.
                prop_assert_eq!(&run, &before);
                let all_rejected = actions.iter().all(|a| matches!(a, Action::Reject { .. }));
                prop_assert!(all_rejected);
            }
            for a in &actions {
                match a {
                    Action::Grant { task, token, .. } => {
                        prop_assert!(*token > last_token, "token {} after {}", token, last_token);
                        last_token = *token;
                        prop_assert!(before.status == RunStatus::Running);
                        for &d in &run.tasks[*task].depends_on {
                            let dependency_committed =
                                matches!(run.tasks[d].state, TaskState::Committed { .. });
                            prop_assert!(dependency_committed);
                        }
                    }
                    Action::Committed { task } => {
                        committed[*task] += 1;
                        prop_assert!(committed[*task] == 1, "task {} committed twice", task);
                        for &d in &run.tasks[*task].depends_on {
                            let dependency_committed =
                                matches!(run.tasks[d].state, TaskState::Committed { .. });
                            prop_assert!(dependency_committed);
                        }
                    }
                    Action::Finished(_) => finished += 1,
                    _ => {}
                }
            }
            prop_assert!(finished <= 1);
            for t in &run.tasks {
                prop_assert!(t.attempts <= run.policy.max_attempts);
            }
            if run.status != RunStatus::Running {
                // A finished run holds no lease.
                let leased = run
                    .tasks
                    .iter()
                    .any(|t| matches!(t.state, TaskState::Leased { .. }));
                prop_assert!(!leased);
            }
        }
        // Replaying the log gives the same state.
        let mut replay = Run::new(plan(4, 6), policy).unwrap();
        for ev in log {
            step(&mut replay, ev);
        }
        prop_assert_eq!(replay, run);
    }

    #[test]
    fn reliable_workers_commit_every_task_exactly_once(
        polls in prop::collection::vec((0..3usize, 1..4usize), 1..50),
        order in prop::collection::vec(0..100usize, 1..50),
    ) {
        let mut run = Run::new(plan(5, 7), policy()).unwrap();
        let mut now = 0;
        let mut committed = vec![0usize; run.tasks.len()];
        let mut i = 0;
        while run.status == RunStatus::Running {
            prop_assert!(i < 10_000, "no progress");
            let (w, slots) = polls[i % polls.len()];
            i += 1;
            step(&mut run, Event::Poll { worker: format!("w{w}"), slots, now });
            // Workers finish their leases in a shuffled order.
            let mut held: Vec<(usize, u64, String)> = run
                .tasks
                .iter()
                .enumerate()
                .filter_map(|(t, x)| match &x.state {
                    TaskState::Leased { worker, token, .. } => Some((t, *token, worker.clone())),
                    _ => None,
                })
                .collect();
            let k = order[i % order.len()] % (held.len() + 1);
            let n = held.len();
            held.rotate_left(k.min(n));
            for (task, token, worker) in held {
                for a in step(&mut run, Event::Report {
                    worker,
                    task,
                    token,
                    outcome: Outcome::Done { manifest: format!("m{task}") },
                    now,
                }) {
                    if let Action::Committed { task } = a {
                        committed[task] += 1;
                    }
                }
            }
            now += 1;
        }
        prop_assert_eq!(&run.status, &RunStatus::Succeeded);
        prop_assert!(committed.iter().all(|&c| c == 1), "{:?}", committed);
    }
}

#[test]
fn an_expired_lease_is_retried_and_the_zombie_cannot_commit() {
    let mut run = Run::new(plan(1, 0), policy()).unwrap();
    let grant = step(
        &mut run,
        Event::Poll {
            worker: "a".into(),
            slots: 1,
            now: 0,
        },
    );
    let Action::Grant { token: old, .. } = grant[0].clone() else {
        panic!("{grant:?}")
    };
    // Worker a goes silent; its lease expires and the task waits out its backoff.
    let acts = step(&mut run, Event::Tick { now: 100 });
    assert!(
        matches!(
            acts[0],
            Action::Retry {
                task: 0,
                not_before: 110,
                ..
            }
        ),
        "{acts:?}"
    );
    assert!(
        step(
            &mut run,
            Event::Poll {
                worker: "b".into(),
                slots: 1,
                now: 105
            }
        )
        .is_empty()
    );
    let grant = step(
        &mut run,
        Event::Poll {
            worker: "b".into(),
            slots: 1,
            now: 110,
        },
    );
    let Action::Grant { token: new, .. } = grant[0].clone() else {
        panic!("{grant:?}")
    };
    assert!(new > old);
    // The zombie reports with its old token: refused.
    let acts = step(
        &mut run,
        Event::Report {
            worker: "a".into(),
            task: 0,
            token: old,
            outcome: Outcome::Done {
                manifest: "zombie".into(),
            },
            now: 120,
        },
    );
    assert!(
        matches!(&acts[0], Action::Reject { reason, .. } if reason.contains("stale")),
        "{acts:?}"
    );
    let acts = step(
        &mut run,
        Event::Report {
            worker: "b".into(),
            task: 0,
            token: new,
            outcome: Outcome::Done {
                manifest: "m".into(),
            },
            now: 130,
        },
    );
    assert_eq!(acts.last(), Some(&Action::Finished(RunStatus::Succeeded)));
    assert_eq!(
        run.tasks[0].state,
        TaskState::Committed {
            manifest: "m".into()
        }
    );
}

#[test]
fn a_task_that_keeps_failing_is_quarantined_and_the_run_fails_unless_missing_is_allowed() {
    for allow_missing in [false, true] {
        let mut run = Run::new(
            plan(2, 1),
            Policy {
                allow_missing,
                ..policy()
            },
        )
        .unwrap();
        let mut now = 0;
        let mut last = Vec::new();
        while run.status == RunStatus::Running && now < 10_000 {
            for a in step(
                &mut run,
                Event::Poll {
                    worker: "w".into(),
                    slots: 2,
                    now,
                },
            ) {
                if let Action::Grant { task, token, .. } = a {
                    let outcome = if task == 0 {
                        Outcome::Retryable {
                            error: "timeout".into(),
                        }
                    } else {
                        Outcome::Done {
                            manifest: format!("m{task}"),
                        }
                    };
                    last = step(
                        &mut run,
                        Event::Report {
                            worker: "w".into(),
                            task,
                            token,
                            outcome,
                            now,
                        },
                    );
                }
            }
            now += 10;
        }
        assert_eq!(run.tasks[0].attempts, 3);
        assert!(matches!(run.tasks[0].state, TaskState::Quarantined { .. }));
        if allow_missing {
            // Task 2 depends on task 0: missing too; task 1 committed.
            assert_eq!(
                run.status,
                RunStatus::SucceededWithMissing {
                    missing: vec![0, 2]
                }
            );
        } else {
            assert!(
                matches!(run.status, RunStatus::Failed { task: 0, .. }),
                "{:?}",
                run.status
            );
            assert!(last.iter().any(|a| matches!(a, Action::Finished(_))));
        }
    }
}

#[test]
fn a_stopping_worker_hands_back_its_lease_and_gets_no_more_work() {
    let mut run = Run::new(plan(2, 0), policy()).unwrap();
    step(
        &mut run,
        Event::Poll {
            worker: "a".into(),
            slots: 1,
            now: 0,
        },
    );
    step(
        &mut run,
        Event::Stopping {
            worker: "a".into(),
            now: 5,
        },
    );
    assert_eq!(
        run.tasks[0].attempts, 0,
        "a handed-back lease costs no attempt"
    );
    let acts = step(
        &mut run,
        Event::Poll {
            worker: "a".into(),
            slots: 1,
            now: 6,
        },
    );
    assert!(matches!(acts[0], Action::Reject { .. }));
    let acts = step(
        &mut run,
        Event::Poll {
            worker: "b".into(),
            slots: 2,
            now: 6,
        },
    );
    assert_eq!(acts.len(), 2);
    // Cancellation revokes both leases and ends the run.
    let acts = step(&mut run, Event::Cancel { now: 7 });
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::Revoke { .. }))
            .count(),
        2
    );
    assert_eq!(run.status, RunStatus::Cancelled);
}

#[test]
fn dependencies_must_come_first() {
    assert_eq!(
        Run::new(vec![("a".into(), vec![0])], policy()).unwrap_err(),
        SchedulerError::BadDependency {
            task: 0,
            dependency: 0
        }
    );
    // An empty run is over at once.
    assert_eq!(
        Run::new(vec![], policy()).unwrap().status,
        RunStatus::Succeeded
    );
}

/// A restarted run recovers the tasks whose committed outputs it finds, in dependency order,
/// and grants only the others; a recovered task whose dependencies are not committed stays
/// pending (its output cannot be trusted to match).
#[test]
fn recovered_tasks_count_as_committed_and_are_not_granted_again() {
    let mut run = Run::new(
        vec![
            ("a".into(), vec![]),
            ("b".into(), vec![0]),
            ("c".into(), vec![1]),
        ],
        policy(),
    )
    .unwrap();
    let recovered = |run: &mut Run, task: usize| {
        step(
            run,
            Event::Recovered {
                task,
                manifest: format!("m{task}"),
            },
        )
    };
    assert!(recovered(&mut run, 2).is_empty(), "c before b is ignored");
    assert_eq!(recovered(&mut run, 0), vec![Action::Committed { task: 0 }]);
    let grants = step(
        &mut run,
        Event::Poll {
            worker: "w".into(),
            slots: 3,
            now: 0,
        },
    );
    assert_eq!(grants.len(), 1);
    let Action::Grant { task: 1, token, .. } = grants[0] else {
        panic!("{grants:?}")
    };
    step(
        &mut run,
        Event::Report {
            worker: "w".into(),
            task: 1,
            token,
            outcome: Outcome::Done {
                manifest: "m1".into(),
            },
            now: 1,
        },
    );
    let end = recovered(&mut run, 2);
    assert!(
        end.contains(&Action::Finished(RunStatus::Succeeded)),
        "{end:?}"
    );
    assert!(
        recovered(&mut run, 1).is_empty(),
        "recovering twice changes nothing"
    );
}

/// The durable store: a run and its events written to SQLite, the database closed (as a killed
/// coordinator leaves it) and reopened: every run comes back in exactly the state it had.
#[test]
fn runs_reload_from_the_state_database_in_the_state_they_had() {
    use crate::store::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = StateStore::open(&path).unwrap();
    let payload = serde_json::json!({"workflow": "two-photon"});
    let mut a = store
        .create_run("run-a", "a", 1, plan(4, 6), policy(), &payload)
        .unwrap();
    let mut b = store
        .create_run(
            "run-b",
            "b",
            2,
            plan(2, 1),
            policy(),
            &serde_json::Value::Null,
        )
        .unwrap();
    assert!(matches!(
        store.create_run("run-a", "again", 3, plan(1, 0), policy(), &payload),
        Err(crate::store::CoordinatorError::Exists(_))
    ));
    // Run a to completion but for one leased task; fail one of b's tasks once.
    let mut now = 0;
    for _ in 0..20 {
        now += 1;
        let acts = store
            .apply(
                &mut a,
                Event::Poll {
                    worker: "w".into(),
                    slots: 2,
                    now,
                },
            )
            .unwrap();
        for act in acts {
            if let Action::Grant { task, token, .. } = act
                && task != 9
            {
                store
                    .apply(
                        &mut a,
                        Event::Report {
                            worker: "w".into(),
                            task,
                            token,
                            outcome: Outcome::Done {
                                manifest: format!("m{task}"),
                            },
                            now,
                        },
                    )
                    .unwrap();
            }
        }
    }
    let grants = store
        .apply(
            &mut b,
            Event::Poll {
                worker: "v".into(),
                slots: 1,
                now,
            },
        )
        .unwrap();
    let Action::Grant { task, token, .. } = grants[0] else {
        panic!("{grants:?}")
    };
    store
        .apply(
            &mut b,
            Event::Report {
                worker: "v".into(),
                task,
                token,
                outcome: Outcome::Retryable {
                    error: "preempted".into(),
                },
                now,
            },
        )
        .unwrap();
    drop(store);
    let reopened = StateStore::open(&path).unwrap().load().unwrap();
    assert_eq!(reopened.len(), 2);
    assert_eq!(reopened[0].id, "run-a");
    assert_eq!(reopened[0].payload, payload);
    assert_eq!(reopened[0].run, a);
    assert_eq!(reopened[1].run, b);
    assert!(matches!(a.state.tasks[9].state, TaskState::Leased { .. }));
    assert_eq!(b.state.tasks[task].attempts, 1);
}

/// A damaged database is refused with the run and the event named, not a panic.
#[test]
fn a_damaged_event_log_is_named() {
    use crate::store::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = StateStore::open(&path).unwrap();
    let mut run = store
        .create_run("r", "r", 0, plan(1, 0), policy(), &serde_json::Value::Null)
        .unwrap();
    let batch = vec![
        Event::Tick { now: 1 },
        Event::Poll {
            worker: "w".into(),
            slots: 1,
            now: 2,
        },
    ];
    let acts = store.apply_all(&mut run, batch).unwrap();
    assert!(matches!(acts[1][0], Action::Grant { task: 0, .. }));
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET event = '{\"Poll\": 3}' WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let e = StateStore::open(&path)
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("run r") && e.contains("event 1"), "{e}");
}

/// Two coordinators on one state database would hand out the same tasks twice: the second is
/// refused while the first holds it, and may open it once the first is gone.
#[test]
fn one_coordinator_per_state_database() {
    use crate::store::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = StateStore::open(&path).unwrap();
    let e = StateStore::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("locked") && e.contains("another coordinator"),
        "{e}"
    );
    drop(first);
    assert!(StateStore::open(&path).is_ok());
}
