//! The coordinator and workers as separate processes talking gRPC on loopback: a run survives a
//! worker and the coordinator killed with SIGKILL and ends byte-identical to an undisturbed run,
//! with no committed task computed again; the API refuses what it should (no token, a wrong
//! token, another protocol version, a malformed or oversized request, an unknown run, an
//! invalid workflow, a zombie's report) with the right status and keeps serving.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tessera_proto::v1;
use tessera_proto::v1::runs_client::RunsClient;
use tessera_proto::v1::work_client::WorkClient;
use tessera_proto::{Bearer, PROTOCOL_VERSION};
use tonic::Code;

use crate::common::{example, fails, ok, run, tessera};

const TOKEN: &str = "test-token-0123456789";

/// A coordinator process on a free loopback port (or `listen`), its URL and its metrics' URL.
fn coordinator(state: &str, listen: &str, extra: &[&str]) -> (Child, String, String) {
    let mut child = tessera()
        .args([
            "coordinator",
            "--listen",
            listen,
            "--state",
            state,
            "--token",
            TOKEN,
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut last_word = || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim()
            .rsplit(' ')
            .next()
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string()
    };
    let addr = last_word();
    let metrics = last_word();
    (child, format!("http://{addr}"), metrics)
}

/// `GET /metrics` of a coordinator, over a plain TCP socket.
fn metrics(url: &str) -> String {
    use std::io::{Read, Write};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

fn worker(url: &str, name: &str) -> Child {
    tessera()
        .args([
            "worker",
            "--coordinator",
            url,
            "--token",
            TOKEN,
            "--name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn committed(run: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(run.join("tasks"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_run_survives_a_killed_worker_and_a_killed_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--preset",
        "base",
        "--frames",
        "600",
        "--height",
        "128",
        "--width",
        "128",
        "--seed",
        "3",
        "--out",
        &p("sim.zarr"),
    ]);
    let workflow = example("two-photon.yaml");
    let reference = p("reference.run");
    ok(&[
        "run",
        &workflow,
        "--input",
        &p("sim.zarr"),
        "--output",
        &reference,
        "--tile-size",
        "32",
    ]);

    let state = p("state.db");
    let settings = ["--lease-ttl-ms", "1500", "--backoff-ms", "100"];
    let (mut coord, url, _) = coordinator(&state, "127.0.0.1:0", &settings);
    let mut a = worker(&url, "worker-a");
    let mut b = worker(&url, "worker-b");
    let out = p("cluster.run");
    let submitted = ok(&[
        "submit",
        &workflow,
        "--input",
        &p("sim.zarr"),
        "--output",
        &out,
        "--tile-size",
        "32",
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    let id = submitted.lines().last().unwrap().trim().to_string();
    assert!(id.starts_with("run-"), "{submitted}");
    let out_path = Path::new(&out);

    // SIGKILL a worker once some tasks are committed (it is likely mid-task): its lease expires
    // and the task goes to another worker.
    wait_for("3 commits", Duration::from_secs(120), || {
        committed(out_path).len() >= 3
    });
    kill(&mut a);
    // SIGKILL the coordinator a little later, note what is committed, and restart it on the
    // same address with the same state.
    wait_for("6 commits", Duration::from_secs(120), || {
        committed(out_path).len() >= 6
    });
    kill(&mut coord);
    let before: Vec<(String, Vec<u8>)> = committed(out_path)
        .into_iter()
        .map(|k| {
            let record = std::fs::read(
                out_path
                    .join("tasks")
                    .join(&k)
                    .join("provenance/record.json"),
            )
            .unwrap();
            (k, record)
        })
        .collect();
    let addr = url.trim_start_matches("http://");
    let (mut coord, url2, _) = coordinator(&state, addr, &settings);
    assert_eq!(url2, url);
    let mut c = worker(&url, "worker-c");
    // Worker b lived through the restart; c replaces a. The run ends, and succeeds.
    let status = run(&[
        "status",
        &id,
        "--watch",
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    assert!(
        status.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    // Byte-identical results and task outputs.
    assert_eq!(
        crate::run::data_digests(&out),
        crate::run::data_digests(&reference)
    );
    // No task committed before the coordinator died was computed again: its record is the same.
    for (k, record) in &before {
        let now = std::fs::read(
            out_path
                .join("tasks")
                .join(k)
                .join("provenance/record.json"),
        )
        .unwrap();
        assert!(&now == record, "task {k} was computed again");
    }
    eprintln!(
        "{} of {} tasks were committed when the coordinator was killed; none recomputed",
        before.len(),
        committed(out_path).len()
    );
    // The run is listed as succeeded.
    let runs = ok(&["runs", "--coordinator", &url, "--token", TOKEN, "--json"]);
    assert!(
        runs.contains(&id) && runs.contains("\"succeeded\""),
        "{runs}"
    );
    // Workers drain and exit on SIGTERM.
    for w in [&mut b, &mut c] {
        terminate(w);
    }
    kill(&mut coord);
}

/// Sends SIGTERM and expects a clean exit.
fn terminate(child: &mut Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "worker exited {s}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn recording() -> v1::Recording {
    v1::Recording {
        uri: "/nonexistent/rec.zarr".into(),
        array: "movie".into(),
        shape: vec![200, 64, 64],
        chunks: vec![100, 64, 64],
        meta_json: r#"{"frame_rate_hz": 30.0}"#.into(),
        digest: "d".repeat(64),
        described_json: String::new(),
    }
}

#[test]
fn the_api_refuses_bad_calls_with_the_right_status_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (mut coord, url, metrics_url) = coordinator(
        state.to_str().unwrap(),
        "127.0.0.1:0",
        &["--lease-ttl-ms", "300", "--backoff-ms", "10"],
    );
    // A worker with the wrong token is refused, with a message that says so.
    let e = fails(&["worker", "--coordinator", &url, "--token", "wrong"]);
    assert!(
        e.contains("refused") && e.contains("wrong bearer token"),
        "{e}"
    );
    // A client: unknown run.
    let e = fails(&[
        "status",
        "run-nope",
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    assert!(e.contains("no run run-nope"), "{e}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = Bearer::new(TOKEN).unwrap();
        let mut runs = RunsClient::with_interceptor(channel.clone(), bearer.clone());
        let mut work = WorkClient::with_interceptor(channel.clone(), bearer);
        // No token at all.
        let mut anonymous = RunsClient::new(channel.clone());
        let s = anonymous
            .list_runs(v1::ListRunsRequest {})
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        // Another protocol version.
        let s = work
            .poll(v1::PollRequest {
                protocol_version: PROTOCOL_VERSION + 1,
                worker: "w".into(),
                slots: 1,
                wait_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("protocol version"), "{}", s.message());
        // A workflow that does not validate: the problem with its line and column.
        let bad = v1::SubmitRunRequest {
            workflow_yaml: "apiVersion: tessera/v1\nkind: Workflow\nstages:\n  - uses: detekt\n"
                .into(),
            workflow_file: "bad.yaml".into(),
            recording: Some(recording()),
            output: "/tmp/never-written".into(),
            ..Default::default()
        };
        let s = runs.submit_run(bad).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("bad.yaml:4:"), "{}", s.message());
        // A malformed recording.
        let mut r = recording();
        r.shape = vec![1];
        let s = runs
            .submit_run(v1::SubmitRunRequest {
                workflow_yaml: std::fs::read_to_string(example("two-photon.yaml")).unwrap(),
                recording: Some(r),
                output: "/tmp/never-written".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("recording.shape"), "{}", s.message());
        // An oversized request.
        let s = runs
            .submit_run(v1::SubmitRunRequest {
                workflow_yaml: "x".repeat(8 << 20),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(s.code(), Code::ResourceExhausted | Code::OutOfRange),
            "{s:?}"
        );
        // Unknown run.
        let s = runs
            .get_run(v1::GetRunRequest {
                run_id: "run-0".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound);

        // A zombie: a worker whose lease expired and was granted again cannot report.
        let good = v1::SubmitRunRequest {
            workflow_yaml: std::fs::read_to_string(example("two-photon.yaml")).unwrap(),
            workflow_file: "two-photon.yaml".into(),
            recording: Some(recording()),
            output: dir.path().join("zombie.run").to_str().unwrap().into(),
            ..Default::default()
        };
        let id = runs.submit_run(good).await.unwrap().into_inner().run_id;
        let poll = |w: &str| v1::PollRequest {
            protocol_version: PROTOCOL_VERSION,
            worker: w.into(),
            slots: 1,
            wait_ms: 3_000,
        };
        let first = work.poll(poll("zombie")).await.unwrap().into_inner().leases;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].task, 0);
        let spec: serde_json::Value = serde_json::from_str(&first[0].spec_json).unwrap();
        assert_eq!(spec["uses"], "register");
        // Let the lease expire; another worker gets the task with a newer token.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let second = work.poll(poll("live")).await.unwrap().into_inner().leases;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].task, 0);
        assert!(second[0].token > first[0].token);
        let report = |l: &v1::Lease, w: &str| v1::ReportRequest {
            lease: Some(v1::LeaseRef {
                protocol_version: PROTOCOL_VERSION,
                worker: w.into(),
                run_id: l.run_id.clone(),
                task: l.task,
                token: l.token,
            }),
            outcome: Some(v1::report_request::Outcome::DoneManifest("m".into())),
        };
        let s = work.report(report(&first[0], "zombie")).await.unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("refused"), "{}", s.message());
        work.report(report(&second[0], "live")).await.unwrap();
        // Cancel: the run ends cancelled.
        let info = runs
            .cancel_run(v1::GetRunRequest { run_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.state, "cancelled");
        assert_eq!(info.committed, 1);
        // Still serving.
        let listed = runs.list_runs(v1::ListRunsRequest {}).await.unwrap();
        assert_eq!(listed.into_inner().runs.len(), 1);
        id
    });
    // Operators' metrics: one run, cancelled, one task committed after its grant.
    let m = metrics(&metrics_url);
    for line in [
        "tessera_runs{state=\"cancelled\"} 1",
        "tessera_runs{state=\"running\"} 0",
        "tessera_task_seconds_count 1",
        "# TYPE tessera_queue_depth gauge",
    ] {
        assert!(m.contains(line), "no {line:?} in {m}");
    }
    // Watching a cancelled run exits non-zero and says so.
    let e = fails(&[
        "status",
        &id,
        "--watch",
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    assert!(e.contains("cancelled"), "{e}");
    kill(&mut coord);
}

#[test]
fn tls_with_a_certificate_clients_that_trust_it_connect_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(p("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.signing_key.serialize_pem()).unwrap();
    let (mut coord, url, _) = coordinator(
        &p("state.db"),
        "127.0.0.1:0",
        &["--tls-cert", &p("cert.pem"), "--tls-key", &p("key.pem")],
    );
    // The certificate names localhost.
    let https = url.replace("http://127.0.0.1", "https://localhost");
    let listed = ok(&[
        "runs",
        "--coordinator",
        &https,
        "--token",
        TOKEN,
        "--tls-ca",
        &p("cert.pem"),
    ]);
    assert!(listed.is_empty(), "{listed}");
    // In the clear, or without trusting the certificate: refused, with a message.
    let e = fails(&["runs", "--coordinator", &url, "--token", TOKEN]);
    assert!(!e.is_empty());
    let e = fails(&["runs", "--coordinator", &https, "--token", TOKEN]);
    assert!(e.contains("--tls-ca"), "{e}");
    kill(&mut coord);
}

/// A worker told to stop while its coordinator is gone does not wait for it forever: it finishes
/// the task in hand, retries the report for `--drain-timeout-s`, gives it up and exits 0. The
/// task's committed output is then reused, not recomputed, once a coordinator is back.
#[test]
fn a_stopping_worker_gives_up_a_report_its_coordinator_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--frames",
        "800",
        "--height",
        "96",
        "--width",
        "96",
        "--seed",
        "3",
        "--out",
        &p("sim.zarr"),
    ]);
    let state = p("state.db");
    let (mut coord, url, _) = coordinator(&state, "127.0.0.1:0", &["--lease-ttl-ms", "2000"]);
    let mut w = tessera()
        .args([
            "worker",
            "--coordinator",
            &url,
            "--token",
            TOKEN,
            "--name",
            "w",
            "--drain-timeout-s",
            "2",
        ])
        .env("TESSERA_LOG", "tessera_worker=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its log, line by line (a task's "started" says the worker holds it).
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = w.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut err = String::new();
    ok(&[
        "submit",
        &example("two-photon.yaml"),
        "--input",
        &p("sim.zarr"),
        "--output",
        &p("out.run"),
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    // As soon as the worker has started a task (a registration of 800 frames: most of a second),
    // the coordinator dies and the worker is told to stop. (The coordinator's lease count is not
    // enough: a lease granted just before the coordinator dies may never reach the worker.)
    let started = Instant::now();
    while !err.contains(" started") {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                err.push_str(&line);
                err.push('\n');
            }
            Err(e) => panic!("the worker started no task ({e}):\n{err}"),
        }
    }
    kill(&mut coord);
    let stopped_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(60),
            "the worker waited for its coordinator"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    for line in lines.try_iter() {
        err.push_str(&line);
        err.push('\n');
    }
    assert!(status.success(), "{err}");
    assert!(err.contains("1 report(s) given up"), "{err}");
    // The output it committed is there; a new coordinator on the same state and a new worker
    // finish the run, reusing it.
    let out = p("out.run");
    let first = committed(Path::new(&out));
    assert_eq!(first.len(), 1, "{first:?}");
    let record = |k: &str| {
        std::fs::read(
            Path::new(&out)
                .join("tasks")
                .join(k)
                .join("provenance/record.json"),
        )
        .unwrap()
    };
    let before = record(&first[0]);
    let (mut coord, url, _) = coordinator(&state, "127.0.0.1:0", &["--lease-ttl-ms", "2000"]);
    let mut w2 = worker(&url, "w2");
    let runs = ok(&["runs", "--coordinator", &url, "--token", TOKEN, "--json"]);
    let id = runs
        .split('"')
        .find(|s| s.starts_with("run-"))
        .unwrap()
        .to_string();
    let status = run(&[
        "status",
        &id,
        "--watch",
        "--coordinator",
        &url,
        "--token",
        TOKEN,
    ]);
    assert!(status.status.success());
    assert!(
        record(&first[0]) == before,
        "the committed task was computed again"
    );
    terminate(&mut w2);
    kill(&mut coord);
}
