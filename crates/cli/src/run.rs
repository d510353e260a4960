//! `tessera run WORKFLOW --input URI --output URI [--workers N]`: the embedded cluster. It starts
//! the coordinator (`tessera_coordinator::grpc`) on a free loopback port with a fresh token and
//! N workers (`tessera_worker::client`, one task slot each) in this process, submits the run
//! through the client API and follows it to the end: the same coordinator, workers and gRPC
//! calls as a cluster's, not a second code path.
//!
//! Output (written in place, marked `incomplete` until the publish task finishes it):
//! ```text
//! <out>/tasks/<key>/          each task's committed output (the registered or denoised movie's
//!                             pieces, the tiles' components, ...) with its own provenance record
//! <out>/rois/, <out>/summary/ the results, copied from the tasks that publish them
//! <out>/run/workflow.json     the normalized workflow (every default explicit)
//! <out>/run/tasks.jsonl       every task's provenance record, one JSON object per line
//! <out>/run/state.db          the coordinator's state: runs, tasks, every event (SQLite)
//! <out>/provenance/, <out>/ro-crate-metadata.json   the run's record, manifest and RO-Crate
//! ```
//! A run that was interrupted or failed is resumed by the same command: the coordinator reopens
//! `run/state.db`, the submission attaches to the unfinished run, and committed tasks stay
//! committed (tasks whose output is found committed under their key are not computed again).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use tessera_coordinator::grpc::{Service, now_ms};
use tessera_coordinator::{Coordinator, Settings};
use tessera_io::{Location, Store};
use tessera_proto::v1::GetRunRequest;
use tessera_worker::WorkerInfo;
use tessera_worker::client::{WorkerOptions, serve};

use crate::cluster::{generate_token, prepare, runs_client, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow YAML file.
    pub workflow: PathBuf,
    #[command(flatten)]
    pub on: crate::workflow::PlanOptions,
    /// Where the run writes (path or URI) instead of the workflow's outputs.uri.
    #[arg(long)]
    pub output: Option<String>,
    /// Workers (each runs one task at a time, data-parallel inside).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Replace a finished output at the same location (an unfinished one is always resumed).
    #[arg(long)]
    pub overwrite: bool,
    /// The coordinator's state database (SQLite; default: <output>/run/state.db for a
    /// filesystem output, in memory for an object store).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Testing: start each task after a pseudo-random pause drawn from this seed, so tasks
    /// complete in another order.
    #[arg(long, hide = true)]
    pub shuffle_seed: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let prepared = prepare(
        &args.workflow,
        &args.on,
        args.output.clone(),
        args.overwrite,
    )?;
    let out_uri = prepared.output.clone();
    let state_path = match (&args.state, Location::parse(&out_uri)?) {
        (Some(p), _) => p.clone(),
        (None, Location::File(p)) => {
            let dir = p.join("run");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.join("state.db")
        }
        (None, _) => PathBuf::from(":memory:"),
    };
    let settings = Settings {
        // Workers in this process are not lost silently; a minute covers a stalled store.
        lease_ttl_ms: 60_000,
        backoff_base_ms: 200,
        backoff_max_ms: 10_000,
    };
    let mut core = Coordinator::open(&state_path, settings)
        .with_context(|| format!("cannot open the run's state {}", state_path.display()))?;
    // Whatever an earlier process leased died with it.
    core.release_all_leases(now_ms())?;
    let token = generate_token()?;
    let workers = args.workers as usize;
    let host = tessera_io::provenance::hostname();
    let pid = std::process::id();

    let rt = runtime()?;
    let (info, resumed) = rt.block_on(async {
        let (listener, addr) =
            tessera_coordinator::grpc::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let url = format!("http://{addr}");
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Service::new(core);
        let server_token = token.clone();
        let server = tokio::spawn(async move {
            service
                .serve(listener, &server_token, None, async {
                    let _ = server_stopped.await;
                })
                .await
        });
        let mut client = runs_client(&url, &token, None)?;
        let submitted = client
            .submit_run(prepared.request)
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        for w in &submitted.warnings {
            eprintln!("warning: {w}");
        }
        let id = submitted.run_id.clone();
        let before = client
            .get_run(GetRunRequest { run_id: id.clone() })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        if submitted.attached {
            eprintln!(
                "resuming {out_uri}: {} of {} tasks already committed",
                before.committed, before.tasks
            );
        }
        let (stop_workers, stop) = tokio::sync::watch::channel(false);
        let mut pool = tokio::task::JoinSet::new();
        for i in 0..workers {
            pool.spawn(serve(
                WorkerOptions {
                    coordinator: url.clone(),
                    token: token.clone(),
                    tls_ca: None,
                    slots: 1,
                    info: WorkerInfo {
                        id: format!("{host}/{pid}/embedded-{i}"),
                        tool: crate::provenance::tool(),
                    },
                    shuffle_seed: args.shuffle_seed,
                    // The coordinator is in this process: it outlives its workers.
                    drain_timeout: std::time::Duration::from_secs(30),
                },
                stop.clone(),
            ));
        }
        let bar = crate::progress::tasks(before.tasks, "run");
        let mut stream = client
            .watch_run(GetRunRequest { run_id: id.clone() })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        let mut last = before.clone();
        let mut failed_seen = 0;
        while let Some(r) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("lost the coordinator: {}", s.message()))?
        {
            bar.set_position(r.committed);
            if r.retries > failed_seen {
                failed_seen = r.retries;
            }
            last = r;
        }
        bar.finish_and_clear();
        // Busy workers finish their task (committed or discarded whole), then stop.
        let _ = stop_workers.send(true);
        while let Some(w) = pool.join_next().await {
            w.context("a worker ended abnormally")??;
        }
        let _ = stop_server.send(());
        server.await.context("the coordinator ended abnormally")??;
        anyhow::Ok((last, before.committed))
    })?;
    if info.state != "succeeded" {
        bail!(
            "the run {} {}: {}\n{out_uri} is left marked incomplete with {} committed task(s); run the same command again to resume",
            info.run_id,
            info.state,
            info.error,
            info.committed
        );
    }
    let location = Location::parse(&out_uri)?;
    let accepted = Store::open(&location)?
        .read_array::<u8>("rois/accepted")
        .map(|a| {
            let n = a.len();
            format!(
                ": {} components, {} accepted",
                n,
                a.iter().filter(|&&v| v == 1).count()
            )
        })
        .unwrap_or_default();
    let total = info.tasks - 1;
    let recovered = (resumed + info.reused).min(total);
    println!(
        "ran {} ({}) on {}: {total} tasks ({} run, {recovered} resumed) on {workers} worker(s) in {:.1} s -> {location}{accepted}",
        args.workflow.display(),
        prepared.workflow.chain(),
        prepared.input,
        total - recovered,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
