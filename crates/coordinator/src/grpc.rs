//! The gRPC service: thin tonic handlers over [`Coordinator`]. Each handler converts the
//! request, runs the coordinator's (blocking: SQLite, fsync) logic on tokio's blocking pool so
//! the async threads stay free for heartbeats, and converts the answer or error to a gRPC status.
//! Every call is authenticated ([`tessera_proto::Auth`]); worker calls must speak
//! [`tessera_proto::PROTOCOL_VERSION`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::task::RecordingInput;
use tessera_proto::v1;
use tessera_proto::v1::runs_server::{Runs, RunsServer};
use tessera_proto::v1::work_server::{Work, WorkServer};
use tessera_proto::{Auth, check_protocol};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::CoordinatorError;
use crate::scheduler::{Millis, Outcome};
use crate::service::{Coordinator, RunSummary, Submission};

/// Milliseconds since the Unix epoch: the coordinator's clock.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The longest a poll is held waiting for work.
const MAX_WAIT_MS: u32 = 10_000;

fn status(e: CoordinatorError) -> Status {
    match e {
        CoordinatorError::UnknownRun(_) => Status::not_found(e.to_string()),
        CoordinatorError::InvalidWorkflow(_) | CoordinatorError::InvalidRequest(_) => {
            Status::invalid_argument(e.to_string())
        }
        CoordinatorError::Conflict(_) | CoordinatorError::Exists(_) => {
            Status::already_exists(e.to_string())
        }
        CoordinatorError::Rejected(_) => Status::failed_precondition(e.to_string()),
        CoordinatorError::Sql { .. }
        | CoordinatorError::Locked { .. }
        | CoordinatorError::Corrupt { .. }
        | CoordinatorError::Scheduler(_) => Status::internal(e.to_string()),
    }
}

/// A call's work on the coordinator; it returns what to answer once its events are committed.
type Job = Box<dyn FnOnce(&mut Coordinator) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The service state shared by the handlers: a channel to the thread that owns the coordinator,
/// and a counter bumped after every change (long polls and watches wait on it).
///
/// Group commit: the coordinator's thread takes every call waiting for it, runs them in order
/// inside one SQLite transaction, commits (one sync for all their events), and only then answers
/// them. Nothing is acknowledged before it is on disk, and concurrent calls share the sync.
#[derive(Debug, Clone)]
pub struct Service {
    jobs: std::sync::mpsc::Sender<Job>,
    changed: Arc<watch::Sender<u64>>,
}

/// Calls committed together at most.
const MAX_BATCH: usize = 512;

fn committer(mut core: Coordinator, jobs: std::sync::mpsc::Receiver<Job>) {
    let mut broken: Option<String> = None;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if let Some(e) = &broken {
            // The database failed: the in-memory state may be ahead of the disk. Refuse
            // everything; a restart rebuilds the state from what was committed.
            for job in batch {
                job(&mut core)(Err(e.clone()));
            }
            continue;
        }
        let begun = core.begin_batch();
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&mut core)).collect();
        let committed = begun.and_then(|()| core.commit_batch()).map_err(|e| {
            format!("the coordinator's state database failed ({e}); restart the coordinator")
        });
        if let Err(e) = &committed {
            tracing::error!(error = %e, "state database commit failed");
            broken = Some(e.clone());
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

impl Service {
    /// Starts the thread that owns `core`.
    pub fn new(core: Coordinator) -> Service {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        // The thread ends when the last Service clone (sender) is dropped.
        let _ = std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || committer(core, rx));
        Service {
            jobs,
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// Runs `f` on the coordinator's thread and answers once its events are committed; bumps
    /// the change counter when `mutates`.
    async fn with<T: Send + 'static>(
        &self,
        mutates: bool,
        f: impl FnOnce(&mut Coordinator) -> Result<T, CoordinatorError> + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c: &mut Coordinator| {
            let out = f(c).map_err(status);
            Box::new(move |commit: Result<(), String>| {
                let _ = tx.send(match commit {
                    Ok(()) => out,
                    Err(e) => Err(Status::internal(e)),
                });
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        let out = rx
            .await
            .map_err(|_| Status::internal("the coordinator's thread ended"))?;
        if mutates {
            self.changed.send_modify(|n| *n += 1);
        }
        out
    }

    /// Requeues expired leases every `period` until the process ends.
    pub fn spawn_ticker(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                interval.tick().await;
                match me.with(false, |c| c.tick(now_ms())).await {
                    Ok(true) => me.changed.send_modify(|n| *n += 1),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "lease expiry check failed"),
                }
            }
        })
    }

    /// Serves both services on `listener` until `shutdown` resolves; with `tls` (PEM
    /// certificate chain and key) over TLS.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        token: &str,
        tls: Option<(Vec<u8>, Vec<u8>)>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let auth = Auth::new(token);
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = tls {
            builder = builder.tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )?;
        }
        let ticker = self.spawn_ticker(Duration::from_millis(500));
        // No Nagle delay: calls are small and latency-bound.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = builder
            .add_service(RunsServer::with_interceptor(self.clone(), auth.clone()))
            .add_service(WorkServer::with_interceptor(self, auth))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        ticker.abort();
        result
    }
}

fn info(s: RunSummary) -> v1::RunInfo {
    v1::RunInfo {
        run_id: s.run_id,
        name: s.name,
        state: s.state.to_string(),
        error: s.error,
        tasks: s.tasks as u64,
        committed: s.committed as u64,
        reused: s.reused as u64,
        leased: s.leased as u64,
        quarantined: s.quarantined as u64,
        retries: s.retries,
        created_ms: s.created_ms,
        output: s.output,
    }
}

type InfoStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::RunInfo, Status>> + Send>>;

#[tonic::async_trait]
impl Runs for Service {
    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let r = request.into_inner();
        let recording = r
            .recording
            .ok_or_else(|| Status::invalid_argument("recording: missing"))?;
        let recording = RecordingInput::try_from(recording)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let submission = Submission {
            workflow_yaml: r.workflow_yaml,
            workflow_file: if r.workflow_file.is_empty() {
                "workflow".into()
            } else {
                r.workflow_file
            },
            recording,
            output: r.output,
            memory_budget: (r.memory_budget_bytes > 0).then_some(r.memory_budget_bytes),
            tile_size: (r.tile_size_px > 0).then_some(r.tile_size_px),
            command: r.command,
        };
        let s = self
            .with(true, move |c| c.submit(submission, now_ms()))
            .await?;
        tracing::info!(run = %s.run_id, tasks = s.tasks, attached = s.attached, "run submitted");
        Ok(Response::new(v1::SubmitRunResponse {
            run_id: s.run_id,
            attached: s.attached,
            tasks: s.tasks as u64,
            warnings: s.warnings,
        }))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::RunInfo>, Status> {
        let id = request.into_inner().run_id;
        Ok(Response::new(info(
            self.with(false, move |c| c.get(&id)).await?,
        )))
    }

    async fn list_runs(
        &self,
        _request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let runs = self.with(false, |c| Ok(c.list())).await?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs.into_iter().map(info).collect(),
        }))
    }

    type WatchRunStream = InfoStream;

    async fn watch_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = request.into_inner().run_id;
        let first = {
            let id = id.clone();
            self.with(false, move |c| c.get(&id)).await?
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        let mut changed = self.changed.subscribe();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(info(last.clone()))).await.is_err() {
                return;
            }
            while !last.finished() {
                // Wake on a change, or every second (a progress line even when nothing moves).
                let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let id = id.clone();
                let now = match me.with(false, move |c| c.get(&id)).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if now != last {
                    if tx.send(Ok(info(now.clone()))).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::RunInfo>, Status> {
        let id = request.into_inner().run_id;
        let s = self.with(true, move |c| c.cancel(&id, now_ms())).await?;
        tracing::info!(run = %s.run_id, "run cancelled");
        Ok(Response::new(info(s)))
    }
}

#[tonic::async_trait]
impl Work for Service {
    async fn poll(
        &self,
        request: Request<v1::PollRequest>,
    ) -> Result<Response<v1::PollResponse>, Status> {
        let r = request.into_inner();
        check_protocol(r.protocol_version)?;
        if r.worker.is_empty() {
            return Err(Status::invalid_argument("worker: empty name"));
        }
        let slots = r.slots.clamp(1, 1024) as usize;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(r.wait_ms.min(MAX_WAIT_MS)));
        let mut changed = self.changed.subscribe();
        loop {
            let worker = r.worker.clone();
            let grants = self
                .with(false, move |c| c.poll(&worker, slots, now_ms()))
                .await?;
            if !grants.is_empty() {
                self.changed.send_modify(|n| *n += 1);
                for g in &grants {
                    tracing::debug!(run = %g.run_id, task = g.task, token = g.token, worker = %r.worker, "granted");
                }
                return Ok(Response::new(v1::PollResponse {
                    leases: grants
                        .into_iter()
                        .map(|g| v1::Lease {
                            run_id: g.run_id,
                            task: g.task as u64,
                            token: g.token,
                            spec_json: g.spec_json,
                            input_manifests: g.input_manifests.into_iter().collect(),
                            ttl_ms: g.ttl_ms,
                            run_json: g.run_json.unwrap_or_default(),
                        })
                        .collect(),
                }));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Response::new(v1::PollResponse { leases: Vec::new() }));
            }
            // Wait for a change (a commit, a submission), or a little while (a retry's backoff
            // ending), whichever comes first.
            let wait = (deadline - now).min(Duration::from_millis(250));
            let _ = tokio::time::timeout(wait, changed.changed()).await;
        }
    }

    async fn extend_lease(
        &self,
        request: Request<v1::LeaseRef>,
    ) -> Result<Response<v1::ExtendLeaseResponse>, Status> {
        let r = request.into_inner();
        check_protocol(r.protocol_version)?;
        let answer = self
            .with(false, move |c| {
                c.extend(&r.worker, &r.run_id, r.task as usize, r.token, now_ms())
            })
            .await?;
        Ok(Response::new(match answer {
            Ok(ttl) => v1::ExtendLeaseResponse {
                ok: true,
                reason: String::new(),
                ttl_ms: ttl,
            },
            Err(reason) => v1::ExtendLeaseResponse {
                ok: false,
                reason,
                ttl_ms: 0,
            },
        }))
    }

    async fn report(
        &self,
        request: Request<v1::ReportRequest>,
    ) -> Result<Response<v1::ReportResponse>, Status> {
        let r = request.into_inner();
        let lease = r
            .lease
            .ok_or_else(|| Status::invalid_argument("lease: missing"))?;
        check_protocol(lease.protocol_version)?;
        use v1::report_request::Outcome as W;
        let outcome = match r.outcome {
            Some(W::DoneManifest(manifest)) => Outcome::Done { manifest },
            Some(W::ReusedManifest(manifest)) => Outcome::Reused { manifest },
            Some(W::RetryableError(error)) => Outcome::Retryable { error },
            Some(W::FatalError(error)) => Outcome::Fatal { error },
            None => return Err(Status::invalid_argument("outcome: missing")),
        };
        let (run, task) = (lease.run_id.clone(), lease.task);
        let result = self
            .with(true, move |c| {
                c.report(
                    &lease.worker,
                    &lease.run_id,
                    lease.task as usize,
                    lease.token,
                    outcome,
                    now_ms(),
                )
            })
            .await;
        if let Err(e) = &result {
            tracing::warn!(run = %run, task, error = %e.message(), "report refused");
        }
        result.map(|()| Response::new(v1::ReportResponse {}))
    }

    async fn stopping(
        &self,
        request: Request<v1::StoppingRequest>,
    ) -> Result<Response<v1::StoppingResponse>, Status> {
        let r = request.into_inner();
        check_protocol(r.protocol_version)?;
        tracing::info!(worker = %r.worker, "worker stopping");
        self.with(true, move |c| c.stopping(&r.worker, now_ms()))
            .await?;
        Ok(Response::new(v1::StoppingResponse {}))
    }
}

/// Serves the Prometheus text format at `GET /metrics` on `listener` (a minimal HTTP/1.1
/// responder: one request per connection), until the process ends.
pub async fn serve_metrics(service: Service, listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&head);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if line.starts_with("GET ") && (path == "/metrics" || path == "/")
            {
                match service.with(false, |c| Ok(c.metrics_text(now_ms()))).await {
                    Ok(text) => ("200 OK", text),
                    Err(e) => ("503 Service Unavailable", format!("{}\n", e.message())),
                }
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Binds `addr` (port 0: any free port) and returns the listener with the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
