//! The coordinator and worker processes and the clients that talk to them:
//! `tessera coordinator`, `tessera worker`, `tessera submit`, `tessera status`, `tessera cancel`,
//! `tessera runs`. `tessera run` (run.rs) starts the same coordinator and workers in one process
//! on loopback.
//!
//! Every call carries a bearer token: `--token`, `--token-file` or the `TESSERA_TOKEN`
//! environment variable. A coordinator started without one generates one and prints it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tessera_coordinator::grpc::Service;
use tessera_coordinator::{Coordinator, Settings};
use tessera_io::{Location, Output};
use tessera_proto::Bearer;
use tessera_proto::v1::runs_client::RunsClient;
use tessera_proto::v1::{self, GetRunRequest};
use tessera_workflow::RecordingInput;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::provenance::describe_input;

/// Where the bearer token comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The bearer token every call must carry.
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (its first line).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?;
            let t = text.lines().next().unwrap_or_default().trim().to_string();
            if t.is_empty() {
                bail!("the token file {} is empty", f.display());
            }
            return Ok(Some(t));
        }
        Ok(None)
    }

    fn required(&self) -> anyhow::Result<String> {
        self.resolve()?.context(
            "no token: pass --token, --token-file or set TESSERA_TOKEN (the coordinator printed it when it started)",
        )
    }
}

/// How a client or worker reaches the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The coordinator's URL: http://HOST:PORT, or https://HOST:PORT with --tls-ca.
    #[arg(long)]
    pub coordinator: String,
    #[command(flatten)]
    pub token: TokenArgs,
    /// PEM file of the certificate authority (or the self-signed certificate) the coordinator's
    /// TLS certificate must chain to.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl ConnectArgs {
    fn ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.tls_ca
            .as_ref()
            .map(|f| {
                std::fs::read(f).with_context(|| format!("cannot read the CA file {}", f.display()))
            })
            .transpose()
    }

    fn runs(&self) -> anyhow::Result<Runs> {
        runs_client(
            &self.coordinator,
            &self.token.required()?,
            self.ca()?.as_deref(),
        )
    }
}

/// Runs `f` with a client of the coordinator on a fresh runtime (the channel is made inside
/// it: its connector needs the reactor).
fn with_client<T, Fut>(connect: &ConnectArgs, f: impl FnOnce(Runs) -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let rt = runtime()?;
    let client = {
        let _enter = rt.enter();
        connect.runs()?
    };
    rt.block_on(f(client)).with_context(|| {
        format!(
            "the coordinator at {} (plain http:// or https:// with --tls-ca, as it serves)",
            connect.coordinator
        )
    })
}

/// A refusal from the coordinator, as the error to show.
fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// A fresh random token (128 bits from the system's generator, hex).
pub fn generate_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

type Runs = RunsClient<InterceptedService<Channel, Bearer>>;

pub fn runs_client(url: &str, token: &str, tls_ca: Option<&[u8]>) -> anyhow::Result<Runs> {
    let channel = tessera_worker::client::endpoint(url, tls_ca)?.connect_lazy();
    Ok(RunsClient::with_interceptor(channel, Bearer::new(token)?))
}

/// A path or URI made absolute (a filesystem path), so records and remote workers name it from
/// anywhere.
pub fn absolute(uri: &str) -> anyhow::Result<String> {
    Ok(match Location::parse(uri)? {
        Location::File(p) => std::path::absolute(&p).unwrap_or(p).display().to_string(),
        _ => uri.trim_end_matches('/').to_string(),
    })
}

/// A run ready to submit: the workflow validated here (errors with file, line and column before
/// anything is written), the recording described (shape, chunks, metadata, content digest) and
/// the output created, marked incomplete (or an unfinished one kept, to be resumed).
#[derive(Debug)]
pub struct Prepared {
    pub request: v1::SubmitRunRequest,
    pub workflow: tessera_workflow::Workflow,
    pub input: String,
    pub output: String,
}

pub fn prepare(
    file: &Path,
    on: &crate::workflow::PlanOptions,
    output: Option<String>,
    overwrite: bool,
) -> anyhow::Result<Prepared> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read workflow {}", file.display()))?;
    let name = file.display().to_string();
    let w = tessera_workflow::parse(&text, &name)?;
    let (uri, rec) = on.open(&w, file)?;
    let out_uri = output.or_else(|| w.outputs.uri.clone()).with_context(|| {
        format!("no output location: give --output URI or set outputs.uri in {name}")
    })?;
    crate::transform::refuse_overlap(&uri, &out_uri)?;
    // Task keys name the recording by its content: the manifest of every stored object.
    let (described, manifest) = describe_input(&uri)?;
    let digest = match &manifest {
        Some(m) => m.digest(),
        None => crate::workflow::input_digest(&rec),
    };
    let recording = RecordingInput {
        uri: absolute(&uri)?,
        array: rec.array_path().to_string(),
        shape: rec.shape(),
        chunks: rec.chunks(),
        meta: rec.meta().clone(),
        digest,
        described,
    };
    // The output exists, marked incomplete, before any task writes into it.
    let (output, _) = Output::resume(&out_uri, overwrite || w.outputs.overwrite)?;
    output.hand_over();
    let request = v1::SubmitRunRequest {
        workflow_yaml: text,
        workflow_file: name,
        recording: Some(v1::Recording::from(&recording)),
        output: absolute(&out_uri)?,
        memory_budget_bytes: on.memory_budget.unwrap_or(0),
        tile_size_px: on.tile_size.unwrap_or(0),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    Ok(Prepared {
        request,
        workflow: w,
        input: uri,
        output: out_uri,
    })
}

/// One line about a run.
pub fn describe(r: &v1::RunInfo) -> String {
    let mut s = format!(
        "{}  {}  {}  {}/{} tasks committed ({} reused), {} leased, {} retries, {} quarantined  -> {}",
        r.run_id,
        r.name,
        r.state,
        r.committed,
        r.tasks,
        r.reused,
        r.leased,
        r.retries,
        r.quarantined,
        r.output
    );
    if !r.error.is_empty() {
        s.push_str(&format!("\n  error: {}", r.error));
    }
    s
}

#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to listen on (loopback unless told otherwise; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// The state database (SQLite): runs, tasks, every event. Unfinished runs in it resume.
    #[arg(long)]
    pub state: PathBuf,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Lease time to live in milliseconds: a worker silent this long is presumed lost.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ttl_ms: u64,
    /// Backoff before a task's first retry, in milliseconds (doubling, capped at 60 s).
    #[arg(long, default_value_t = 1_000)]
    pub backoff_ms: u64,
    /// PEM certificate (chain) to serve TLS with (with --tls-key); clients then connect to
    /// https://... with --tls-ca.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics (queue depth, leases, retries, task durations) at
    /// http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
}

/// `tessera coordinator`: serves runs to clients and tasks to workers until SIGINT/SIGTERM.
pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let token = match args.token.resolve()? {
        Some(t) => t,
        None => {
            let t = generate_token()?;
            eprintln!("no token given; generated one (pass it to workers and clients):\n{t}");
            t
        }
    };
    let settings = Settings {
        lease_ttl_ms: args.lease_ttl_ms.max(100),
        backoff_base_ms: args.backoff_ms,
        backoff_max_ms: 60_000,
    };
    let core = Coordinator::open(&args.state, settings)
        .with_context(|| format!("cannot open the state database {}", args.state.display()))?;
    let unfinished = core.unfinished();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?,
        )),
        _ => None,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let (listener, addr) = tessera_coordinator::grpc::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {addr}, reachable from other hosts; keep the token secret"
            );
        }
        println!("tessera coordinator listening on {addr}");
        eprintln!(
            "state {} ({unfinished} unfinished run(s) resumed)",
            args.state.display()
        );
        let service = Service::new(core);
        if let Some(m) = args.metrics {
            let (metrics, at) = tessera_coordinator::grpc::bind(m)
                .await
                .with_context(|| format!("cannot listen on {m} for metrics"))?;
            println!("metrics on http://{at}/metrics");
            tokio::spawn(tessera_coordinator::grpc::serve_metrics(
                service.clone(),
                metrics,
            ));
        }
        service
            .serve(listener, &token, tls, shutdown_signal())
            .await
            .context("the gRPC server failed")
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Tasks run at once (each also runs data-parallel inside).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub slots: u32,
    /// This worker's name in records (default: host/pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Once stopping, give up a report the coordinator cannot take after this many seconds (the
    /// task's committed output is reused by whichever worker gets it next).
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_s: u64,
}

/// `tessera worker`: takes tasks from the coordinator until SIGTERM, SIGINT or SIGUSR1, then
/// finishes and reports what it holds (drain) and exits.
pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let token = args.connect.token.required()?;
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            tessera_io::provenance::hostname(),
            std::process::id()
        )
    });
    let options = tessera_worker::client::WorkerOptions {
        coordinator: args.connect.coordinator.clone(),
        token,
        tls_ca: args.connect.ca()?,
        slots: args.slots as usize,
        info: tessera_worker::WorkerInfo {
            id: name.clone(),
            tool: crate::provenance::tool(),
        },
        shuffle_seed: None,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout_s),
    };
    let rt = runtime()?;
    let summary = rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                SignalKind::terminate(),
                SignalKind::interrupt(),
                SignalKind::user_defined1(),
            ];
            let mut streams: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
            let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
            futures_select_all(waits).await;
            eprintln!("stopping: finishing the tasks in hand, taking no more");
            let _ = stop_tx.send(true);
        });
        eprintln!("worker {name} polling {}", args.connect.coordinator);
        tessera_worker::client::serve(options, stop_rx).await
    })?;
    eprintln!(
        "worker stopped: {} task(s) run, {} reused, {} failed, {} refused, {} report(s) given up",
        summary.executed, summary.reused, summary.failed, summary.refused, summary.undelivered
    );
    Ok(())
}

/// Resolves when the first of `futures` does.
async fn futures_select_all<F: std::future::Future + Unpin>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<F> = futures.collect();
    if futures.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Workflow YAML file.
    pub workflow: PathBuf,
    #[command(flatten)]
    pub on: crate::workflow::PlanOptions,
    /// Where the run writes (path or URI) instead of the workflow's outputs.uri.
    #[arg(long)]
    pub output: Option<String>,
    /// Replace a finished output at the same location (an unfinished one is always resumed).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `tessera submit`: validates and describes locally, submits, prints the run id last.
pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    // The storage is read outside any async runtime (the sync Zarr API runs its own).
    let prepared = prepare(
        &args.workflow,
        &args.on,
        args.output.clone(),
        args.overwrite,
    )?;
    let r = with_client(&args.connect, |mut client| async move {
        let r = client
            .submit_run(prepared.request)
            .await
            .map_err(|s| anyhow::anyhow!("the coordinator refused the run: {}", s.message()))?;
        anyhow::Ok(r.into_inner())
    })?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{} run {} ({} tasks) writing {}",
        if r.attached {
            "attached to"
        } else {
            "submitted"
        },
        r.run_id,
        r.tasks,
        prepared.output
    );
    println!("{}", r.run_id);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The run's id (printed by submit; see `tessera runs`).
    pub run: String,
    /// Follow its progress until it ends; exit 0 only if it succeeded.
    #[arg(long)]
    pub watch: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn json_of(r: &v1::RunInfo) -> serde_json::Value {
    serde_json::json!({"run_id": r.run_id, "name": r.name, "state": r.state, "error": r.error,
        "tasks": r.tasks, "committed": r.committed, "reused": r.reused, "leased": r.leased,
        "quarantined": r.quarantined, "retries": r.retries, "created_ms": r.created_ms,
        "output": r.output})
}

/// `tessera status RUN [--watch]`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let show = |r: &v1::RunInfo| {
        if args.json {
            println!("{}", json_of(r));
        } else {
            println!("{}", describe(r));
        }
    };
    let last = with_client(&args.connect, |mut client| async move {
        let request = GetRunRequest {
            run_id: args.run.clone(),
        };
        if !args.watch {
            let r = client.get_run(request).await.map_err(refused)?.into_inner();
            show(&r);
            return anyhow::Ok(None);
        }
        let mut stream = client
            .watch_run(request)
            .await
            .map_err(refused)?
            .into_inner();
        let mut last = None;
        while let Some(r) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("lost the coordinator: {}", s.message()))?
        {
            show(&r);
            last = Some(r);
        }
        anyhow::Ok(last)
    })?;
    if let Some(r) = last
        && r.state != "succeeded"
    {
        let why = if r.error.is_empty() {
            String::new()
        } else {
            format!(": {}", r.error)
        };
        bail!("run {} ended {}{why}", r.run_id, r.state);
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    pub run: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `tessera cancel RUN`.
pub fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let run_id = args.run.clone();
    let r = with_client(&args.connect, |mut client| async move {
        let r = client
            .cancel_run(GetRunRequest { run_id })
            .await
            .map_err(refused)?;
        anyhow::Ok(r.into_inner())
    })?;
    println!("{}", describe(&r));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `tessera runs`: every run the coordinator knows, oldest first.
pub fn runs(args: RunsArgs) -> anyhow::Result<()> {
    let r = with_client(&args.connect, |mut client| async move {
        let r = client
            .list_runs(v1::ListRunsRequest {})
            .await
            .map_err(refused)?;
        anyhow::Ok(r.into_inner())
    })?;
    for run in &r.runs {
        if args.json {
            println!("{}", json_of(run));
        } else {
            println!("{}", describe(run));
        }
    }
    Ok(())
}
