//! `tessera bench`: throughput measurements recorded in docs/BENCHMARKS.md.

use std::time::Instant;

use anyhow::Context;
use tessera_core::Box3;
use tessera_io::Recording;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Box-read throughput of a recording: chunk-aligned full-field slabs, then unaligned tiles.
    Read {
        /// Recording location.
        uri: String,
        #[arg(long)]
        array: Option<String>,
        /// Edge of the unaligned square tiles (px) and their length in frames.
        #[arg(long, default_value_t = 100)]
        tile: u64,
        #[arg(long, default_value_t = 100)]
        tile_frames: u64,
    },
    /// The coordinator's scheduling state machine alone (no transport, no-op tasks): a plan of
    /// `--tasks` tasks in two stages (each task of the second waits for two of the first), run to
    /// completion by `--workers` workers polling for `--slots` tasks each and reporting them done.
    /// Prints grants per second and the process's peak memory.
    Scheduler {
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 8)]
        slots: usize,
    },
    /// Dispatch through the real coordinator over gRPC on loopback: a run of `--tasks` no-op
    /// tasks (the `scheduler` plan; their specifications are stored and sent like real ones)
    /// served by `tessera coordinator`'s service with its SQLite state, and `--workers` clients
    /// that poll for `--slots` tasks at a time and report each done at once. Prints tasks per
    /// second and the process's peak memory.
    Dispatch {
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 8)]
        slots: usize,
        /// Folder for the state database (default: a temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Recovery of the coordinator's durable state: a run of `--tasks` tasks (as for `scheduler`)
    /// half done through the SQLite event log (events committed in batches of a poll round), the
    /// database closed, then reopened and every run replayed. Prints the time to log and to
    /// recover, and the database's size.
    Recovery {
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// Folder for the database (default: a temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// The plan the scheduler benchmarks use: two stages, each task of the second waiting for two of
/// the first.
fn bench_plan(tasks: usize) -> Vec<(String, Vec<usize>)> {
    let first = tasks / 2;
    (0..tasks)
        .map(|i| {
            let deps = if i < first || first == 0 {
                Vec::new()
            } else {
                let j = i - first;
                vec![j, (j + 1) % first]
            };
            (format!("{i:064x}"), deps)
        })
        .collect()
}

fn bench_recovery(tasks: usize, dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use tessera_coordinator::{Action, Event, Outcome, Policy, StateStore};
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench-state.db");
    let _ = std::fs::remove_file(&path);
    let t0 = Instant::now();
    let mut store = StateStore::open(&path)?;
    let mut run = store.create_run(
        "bench",
        "bench",
        0,
        bench_plan(tasks),
        Policy::default(),
        &serde_json::Value::Null,
    )?;
    let created = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (mut done, mut now) = (0usize, 0u64);
    while done < tasks / 2 {
        now += 1;
        let polled = store.apply_all(
            &mut run,
            vec![Event::Poll {
                worker: "w".into(),
                slots: 1000,
                now,
            }],
        )?;
        let reports: Vec<Event> = polled
            .into_iter()
            .flatten()
            .filter_map(|a| match a {
                Action::Grant { task, token, .. } => Some(Event::Report {
                    worker: "w".into(),
                    task,
                    token,
                    outcome: Outcome::Done {
                        manifest: format!("{task:064x}"),
                    },
                    now,
                }),
                _ => None,
            })
            .collect();
        anyhow::ensure!(!reports.is_empty(), "no task could be granted");
        done += reports.len();
        store.apply_all(&mut run, reports)?;
    }
    let logged = t1.elapsed().as_secs_f64();
    let events = run.events;
    drop(store);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t2 = Instant::now();
    let runs = StateStore::open(&path)?.load()?;
    let recovered = t2.elapsed().as_secs_f64();
    anyhow::ensure!(
        runs.len() == 1 && runs[0].run == run,
        "the replayed run differs from the one logged"
    );
    println!(
        "{tasks} tasks: run recorded in {created:.2} s; {done} tasks done through {events} events logged in {logged:.2} s; database {:.1} MB; reopened and replayed in {recovered:.2} s (identical state); peak memory {:.0} MB",
        bytes as f64 / 1e6,
        tessera_io::provenance::peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

fn bench_dispatch(
    tasks: usize,
    workers: usize,
    slots: usize,
    dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tessera_coordinator::grpc::{Service, bind, now_ms};
    use tessera_coordinator::{Coordinator, Policy, Settings};
    use tessera_proto::v1;
    use tessera_proto::{Bearer, PROTOCOL_VERSION};

    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench-dispatch.db");
    let _ = std::fs::remove_file(&path);
    let mut core = Coordinator::open(&path, Settings::default())?;
    let t0 = Instant::now();
    let plan = bench_plan(tasks)
        .into_iter()
        .map(|(k, d)| {
            let spec = format!(r#"{{"key":"{k}","stage":"noop"}}"#);
            (k, d, spec)
        })
        .collect();
    let (id, n) = core.start_run(
        "bench",
        serde_json::json!({"output": "bench"}),
        plan,
        Policy::default(),
        now_ms(),
    )?;
    let created = t0.elapsed().as_secs_f64();
    let token = crate::cluster::generate_token()?;
    let done = Arc::new(AtomicUsize::new(0));
    let rt = crate::cluster::runtime()?;
    let secs = rt.block_on(async {
        let (listener, addr) = bind(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )))
        .await?;
        let server_token = token.clone();
        tokio::spawn(async move {
            Service::new(core)
                .serve(listener, &server_token, None, std::future::pending())
                .await
        });
        let url = format!("http://{addr}");
        let started = Instant::now();
        let mut pool = tokio::task::JoinSet::new();
        for w in 0..workers {
            let channel = tonic::transport::Channel::from_shared(url.clone())?
                .connect()
                .await?;
            let mut client =
                v1::work_client::WorkClient::with_interceptor(channel, Bearer::new(&token)?);
            let done = done.clone();
            pool.spawn(async move {
                let name = format!("bench-{w}");
                while done.load(Ordering::Relaxed) < n {
                    let leases = client
                        .poll(v1::PollRequest {
                            protocol_version: PROTOCOL_VERSION,
                            worker: name.clone(),
                            slots: slots as u32,
                            wait_ms: 200,
                        })
                        .await?
                        .into_inner()
                        .leases;
                    // Each task's report goes out as it finishes, concurrently, as a worker's
                    // slots do.
                    let mut reports = tokio::task::JoinSet::new();
                    for l in leases {
                        let mut client = client.clone();
                        let request = v1::ReportRequest {
                            lease: Some(v1::LeaseRef {
                                protocol_version: PROTOCOL_VERSION,
                                worker: name.clone(),
                                run_id: l.run_id,
                                task: l.task,
                                token: l.token,
                            }),
                            outcome: Some(v1::report_request::Outcome::DoneManifest(format!(
                                "{:064x}",
                                l.task
                            ))),
                        };
                        reports.spawn(async move { client.report(request).await });
                    }
                    while let Some(r) = reports.join_next().await {
                        r??;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = pool.join_next().await {
            r??;
        }
        anyhow::Ok(started.elapsed().as_secs_f64())
    })?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{n} no-op tasks of run {id} (stored in {created:.2} s) dispatched over loopback gRPC to {workers} worker(s) x {slots} slot(s) in {secs:.2} s: {:.0} tasks/s; state database {:.1} MB; peak memory {:.0} MB",
        n as f64 / secs.max(1e-9),
        bytes as f64 / 1e6,
        tessera_io::provenance::peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

/// Runs a plan of no-op tasks through `tessera_coordinator::step`.
fn bench_scheduler(tasks: usize, workers: usize, slots: usize) -> anyhow::Result<()> {
    use tessera_coordinator::{Action, Event, Outcome, Policy, Run, RunStatus, step};
    let started = Instant::now();
    let mut run = Run::new(bench_plan(tasks), Policy::default())?;
    let built = started.elapsed().as_secs_f64();
    let rss_built = tessera_io::provenance::peak_rss_bytes().unwrap_or(0);
    let names: Vec<String> = (0..workers.max(1)).map(|w| format!("w{w}")).collect();
    let t0 = Instant::now();
    let (mut grants, mut now) = (0usize, 0u64);
    while run.status == RunStatus::Running {
        let mut progressed = false;
        for name in &names {
            now += 1;
            let acts = step(
                &mut run,
                Event::Poll {
                    worker: name.clone(),
                    slots,
                    now,
                },
            );
            for a in acts {
                if let Action::Grant { task, token, .. } = a {
                    grants += 1;
                    progressed = true;
                    step(
                        &mut run,
                        Event::Report {
                            worker: name.clone(),
                            task,
                            token,
                            outcome: Outcome::Done {
                                manifest: String::new(),
                            },
                            now,
                        },
                    );
                }
            }
        }
        anyhow::ensure!(
            progressed || run.status != RunStatus::Running,
            "no task could be granted"
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{tasks} tasks ({workers} workers x {slots} slots): plan built in {built:.2} s ({:.0} MB peak), run to completion in {secs:.2} s: {:.0} grants+reports per second; peak memory {:.0} MB; {:?}",
        rss_built as f64 / 1e6,
        grants as f64 / secs.max(1e-9),
        tessera_io::provenance::peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
        run.status
    );
    Ok(())
}

fn report(label: &str, bytes: u64, boxes: usize, secs: f64) {
    println!(
        "{label:<34} {boxes:>5} boxes  {:>9.1} MB  {:>7.2} s  {:>8.1} MB/s",
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Scheduler {
            tasks,
            workers,
            slots,
        } => bench_scheduler(tasks, workers, slots),
        What::Recovery { tasks, dir } => bench_recovery(tasks, dir),
        What::Dispatch {
            tasks,
            workers,
            slots,
            dir,
        } => bench_dispatch(tasks, workers, slots, dir),
        What::Read {
            uri,
            array,
            tile,
            tile_frames,
        } => {
            let rec = Recording::open(&uri, array.as_deref())
                .with_context(|| format!("failed to open {uri}"))?;
            let shape = rec.shape();
            let item = rec.dtype().size() as u64;
            println!(
                "{} {} chunks {:?} codecs {}",
                shape,
                rec.dtype(),
                rec.chunks(),
                rec.codecs().join(" -> ")
            );
            // Chunk-aligned: whole-field slabs of one chunk row of frames.
            let ct = rec.chunks()[0];
            let started = Instant::now();
            let (mut bytes, mut n) = (0u64, 0usize);
            let mut t = 0;
            while t < shape.t {
                let b = Box3::within(&shape, t..(t + ct).min(shape.t), 0..shape.y, 0..shape.x)?;
                let a = rec.read_box_f32(&b)?;
                bytes += a.len() as u64 * item;
                n += 1;
                t += ct;
            }
            report(
                "aligned full-field slabs",
                bytes,
                n,
                started.elapsed().as_secs_f64(),
            );
            // Unaligned: square tiles offset from the chunk grid, over all frames in blocks.
            let started = Instant::now();
            let (mut bytes, mut n) = (0u64, 0usize);
            let tile = tile.clamp(1, shape.y.min(shape.x));
            let mut y = 37 % shape.y;
            while y + tile <= shape.y {
                let mut x = 53 % shape.x;
                while x + tile <= shape.x {
                    let mut t = 17 % shape.t;
                    while t < shape.t {
                        let b = Box3::within(
                            &shape,
                            t..(t + tile_frames).min(shape.t),
                            y..y + tile,
                            x..x + tile,
                        )?;
                        let a = rec.read_box_f32(&b)?;
                        bytes += a.len() as u64 * item;
                        n += 1;
                        t += tile_frames;
                    }
                    x += tile;
                }
                y += tile;
            }
            report(
                &format!("unaligned {tile}x{tile}x{tile_frames} tiles"),
                bytes,
                n,
                started.elapsed().as_secs_f64(),
            );
            Ok(())
        }
    }
}
