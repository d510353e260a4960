//! The worker process's loop (`tessera worker`, and each worker of `tessera run`): poll the
//! coordinator for work (a long poll, which is also the heartbeat), run each granted task on the
//! blocking pool (never on the async threads, so lease extensions keep flowing while a task
//! computes), extend its lease every third of its TTL, and report the outcome. Several tasks run
//! at once when the worker has several slots.
//!
//! Losing the coordinator (a restart) is not an error: calls are retried with jittered backoff,
//! and a report waits until it is delivered. On a stop request (SIGTERM/SIGUSR1 from Slurm or
//! Kubernetes, or the embedded run ending) the worker takes no more work, finishes and reports
//! the tasks it holds, tells the coordinator it is stopping, and returns. While stopping, a report
//! the coordinator cannot take is given up after `drain_timeout`: the task's output is already
//! committed under its key, so whichever worker gets the task next reports it reused without
//! computing it, and a worker drained at walltime does not outlive its allocation waiting for a
//! coordinator that is gone.

use std::time::Duration;

use tessera_proto::v1::work_client::WorkClient;
use tessera_proto::v1::{self, report_request::Outcome};
use tessera_proto::{Bearer, PROTOCOL_VERSION};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::{TaskSpec, WorkerError, WorkerInfo};

type Client = WorkClient<InterceptedService<Channel, Bearer>>;

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator's URL (`http://host:port`).
    pub coordinator: String,
    pub token: String,
    /// PEM of the CA the coordinator's TLS certificate chains to (for an https:// URL).
    pub tls_ca: Option<Vec<u8>>,
    /// Tasks run at once.
    pub slots: usize,
    /// Its name and tool, for records and the coordinator's log.
    pub info: WorkerInfo,
    /// Testing: pause before each task (milliseconds drawn from this seed), so tasks finish in
    /// another order.
    pub shuffle_seed: Option<u64>,
    /// Once stopping, how long an undeliverable report is retried before it is given up.
    pub drain_timeout: Duration,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Tasks computed and reported.
    pub executed: usize,
    /// Tasks found committed and reported without computing.
    pub reused: usize,
    /// Tasks that failed (reported as failures).
    pub failed: usize,
    /// Results the coordinator refused (the lease was gone).
    pub refused: usize,
    /// Reports given up while stopping (the coordinator was unreachable for `drain_timeout`).
    pub undelivered: usize,
}

/// The coordinator's endpoint: `http://` in the clear, `https://` over TLS trusting `tls_ca`.
pub fn endpoint(
    url: &str,
    tls_ca: Option<&[u8]>,
) -> Result<tonic::transport::Endpoint, WorkerError> {
    let bad = |e: &dyn std::fmt::Display| WorkerError::Spec(format!("coordinator URL {url}: {e}"));
    let mut endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| bad(&e))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    match (url.starts_with("https://"), tls_ca) {
        (true, Some(ca)) => {
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                )
                .map_err(|e| bad(&e))?;
        }
        (true, None) => {
            return Err(bad(
                &"an https:// coordinator needs --tls-ca (the CA its certificate chains to)",
            ));
        }
        (false, Some(_)) => {
            return Err(bad(&"--tls-ca is given: use an https:// URL"));
        }
        (false, None) => {}
    }
    Ok(endpoint)
}

/// Connects lazily: the coordinator may not be up yet, or may restart; calls reconnect.
pub fn connect(url: &str, token: &str, tls_ca: Option<&[u8]>) -> Result<Client, WorkerError> {
    let endpoint = endpoint(url, tls_ca)?;
    let bearer = Bearer::new(token).map_err(|e| WorkerError::Spec(e.to_string()))?;
    Ok(
        WorkClient::with_interceptor(endpoint.connect_lazy(), bearer)
            .max_decoding_message_size(256 << 20),
    )
}

/// A pause of 0-60 ms for `task` (SplitMix64 of seed and task).
fn pause(seed: u64, task: u64) -> Duration {
    let mut z = seed ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Duration::from_millis((z ^ (z >> 31)) % 60)
}

/// Jittered exponential backoff for attempt `n` (0-based): 100 ms doubling to 5 s, +-50%.
fn backoff(n: u32, salt: u64) -> Duration {
    let base = (100u64 << n.min(6)).min(5_000);
    let jitter = pause(salt, u64::from(n)).as_millis() as u64 * base / 60;
    Duration::from_millis(base / 2 + jitter)
}

/// Errors that mean "try again later": the coordinator is restarting or unreachable.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
    )
}

/// Runs the worker until `stop` turns true (then drains) or the coordinator refuses it
/// (a wrong token or protocol version: an error naming why).
pub async fn serve(
    options: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<WorkerSummary, WorkerError> {
    let client = connect(
        &options.coordinator,
        &options.token,
        options.tls_ca.as_deref(),
    )?;
    let name = options.info.id.clone();
    let slots = options.slots.max(1);
    let mut running: JoinSet<Result<Done, WorkerError>> = JoinSet::new();
    let mut summary = WorkerSummary::default();
    let mut failures = 0u32;
    let salt = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    while !*stop.borrow() {
        // Collect finished tasks first.
        while let Some(done) = running.try_join_next() {
            count(&mut summary, done)?;
        }
        let free = slots.saturating_sub(running.len());
        if free == 0 {
            tokio::select! {
                done = running.join_next() => if let Some(done) = done { count(&mut summary, done)? },
                _ = stop.changed() => {}
            }
            continue;
        }
        let request = v1::PollRequest {
            protocol_version: PROTOCOL_VERSION,
            worker: name.clone(),
            slots: free as u32,
            wait_ms: 2_000,
        };
        let mut c = client.clone();
        let answer = tokio::select! {
            a = c.poll(request) => a,
            _ = stop.changed() => continue,
        };
        match answer {
            Ok(r) => {
                failures = 0;
                for lease in r.into_inner().leases {
                    let client = client.clone();
                    let options = options.clone();
                    running.spawn(run_lease(client, options, lease, stop.clone()));
                }
            }
            Err(s) if transient(&s) => {
                tracing::debug!(error = %s.message(), "coordinator unreachable; retrying");
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures, salt)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(s) => {
                return Err(WorkerError::Spec(format!(
                    "the coordinator at {} refused this worker: {}",
                    options.coordinator,
                    s.message()
                )));
            }
        }
    }
    // Drain: finish and report what we hold, then say we are stopping.
    while let Some(done) = running.join_next().await {
        count(&mut summary, done)?;
    }
    let mut c = client.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        c.stopping(v1::StoppingRequest {
            protocol_version: PROTOCOL_VERSION,
            worker: name,
        }),
    )
    .await;
    Ok(summary)
}

#[derive(Debug)]
enum Done {
    Executed,
    Reused,
    Failed,
    Refused,
    Undelivered,
}

fn count(
    summary: &mut WorkerSummary,
    done: Result<Result<Done, WorkerError>, tokio::task::JoinError>,
) -> Result<(), WorkerError> {
    match done.map_err(|e| WorkerError::Internal(format!("a task's thread failed: {e}")))?? {
        Done::Executed => summary.executed += 1,
        Done::Reused => summary.reused += 1,
        Done::Failed => summary.failed += 1,
        Done::Refused => summary.refused += 1,
        Done::Undelivered => summary.undelivered += 1,
    }
    Ok(())
}

/// Runs one granted task: computes it on the blocking pool while extending its lease, then
/// reports (retrying while the coordinator is unreachable).
async fn run_lease(
    client: Client,
    options: WorkerOptions,
    lease: v1::Lease,
    stop: watch::Receiver<bool>,
) -> Result<Done, WorkerError> {
    let lease_ref = v1::LeaseRef {
        protocol_version: PROTOCOL_VERSION,
        worker: options.info.id.clone(),
        run_id: lease.run_id.clone(),
        task: lease.task,
        token: lease.token,
    };
    let spec: Result<TaskSpec, WorkerError> = serde_json::from_str(&lease.spec_json).map_err(|e| {
        WorkerError::Spec(format!(
            "task {} of run {}: specification: {e}",
            lease.task, lease.run_id
        ))
    });
    let spec = spec.map(|mut spec| {
        for input in &mut spec.inputs {
            if let Some(m) = lease.input_manifests.get(&input.key) {
                input.manifest = m.clone();
            }
        }
        if !lease.run_json.is_empty() {
            spec.run = serde_json::from_str(&lease.run_json).ok();
        }
        spec
    });
    let info = options.info.clone();
    let shuffle = options.shuffle_seed;
    let task_no = lease.task;
    let run_id = lease.run_id.clone();
    let mut work = tokio::task::spawn_blocking(move || {
        let spec = spec?;
        if let Some(seed) = shuffle {
            std::thread::sleep(pause(seed, task_no));
        }
        let _span = tracing::info_span!("task", key = %spec.key, stage = %spec.stage, tile = spec.tile.index).entered();
        tracing::info!(run = %run_id, task = task_no, "started");
        // A panic (a bug, never the data's fault by design) fails the task, not the worker.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::execute(&spec, &info)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(WorkerError::Internal(format!("panicked: {what}")))
        })
    });
    // Keep the lease alive while the task computes.
    let every = Duration::from_millis((lease.ttl_ms / 3).clamp(50, 10_000));
    let mut lost: Option<String> = None;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tokio::time::sleep(every), if lost.is_none() => {
                let mut c = client.clone();
                match c.extend_lease(lease_ref.clone()).await {
                    Ok(r) if !r.get_ref().ok => {
                        tracing::warn!(run = %lease.run_id, task = lease.task, reason = %r.get_ref().reason, "lease lost; the result will not count");
                        lost = Some(r.into_inner().reason);
                    }
                    Ok(_) => {}
                    Err(s) => tracing::debug!(error = %s.message(), "lease extension failed; retrying"),
                }
            }
        }
    };
    let result =
        result.map_err(|e| WorkerError::Internal(format!("task thread ended abnormally: {e}")))?;
    let what = format!("task {} of run {}", lease.task, lease.run_id);
    let (outcome, done) = match result {
        Ok(r) if r.reused => (Outcome::ReusedManifest(r.manifest), Done::Reused),
        Ok(r) => (Outcome::DoneManifest(r.manifest), Done::Executed),
        Err(e) if e.is_retryable() => (
            Outcome::RetryableError(format!("{what}: {e}")),
            Done::Failed,
        ),
        Err(e) => (Outcome::FatalError(format!("{what}: {e}")), Done::Failed),
    };
    if let Outcome::RetryableError(e) | Outcome::FatalError(e) = &outcome {
        tracing::warn!(error = %e, "task failed");
    }
    let request = v1::ReportRequest {
        lease: Some(lease_ref),
        outcome: Some(outcome),
    };
    let salt = lease.token;
    let mut stopping_since: Option<std::time::Instant> = None;
    for attempt in 0u32.. {
        let mut c = client.clone();
        match c.report(request.clone()).await {
            Ok(_) => return Ok(done),
            Err(s) if transient(&s) => {
                if *stop.borrow() {
                    let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= options.drain_timeout {
                        tracing::warn!(run = %lease.run_id, task = lease.task, error = %s.message(),
                            "stopping: the coordinator did not take this report in time; leaving it (a committed output is reused by the next worker)");
                        return Ok(Done::Undelivered);
                    }
                }
                tracing::debug!(error = %s.message(), "report not delivered; retrying");
                tokio::time::sleep(backoff(attempt, salt)).await;
            }
            Err(s) => {
                tracing::warn!(run = %lease.run_id, task = lease.task, error = %s.message(), "report refused");
                return Ok(Done::Refused);
            }
        }
    }
    Ok(Done::Refused)
}
