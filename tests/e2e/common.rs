//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tessera` binary under test.
pub fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

/// Runs `tessera` with `args`, returning its output (whatever the exit status).
pub fn run(args: &[&str]) -> Output {
    tessera()
        .args(args)
        .output()
        .expect("failed to start tessera")
}

/// Runs `tessera` and asserts success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `tessera`, asserts failure with exit code 1, and returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "tessera {args:?} should fail; stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The path of an example workflow in `workflows/`.
pub fn example(name: &str) -> String {
    repo_root()
        .join("workflows")
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

/// `../shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    repo_root().join("../shared/data")
}

/// Runs a Python script from tests/python with arguments; panics with its output on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/python").join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 must be installed (scripts/test.sh installs the packages)");
    assert!(
        out.status.success(),
        "python {script} {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Reads a little-endian raw file of u16 values.
pub fn read_raw_u16(path: &Path) -> Vec<u16> {
    let bytes = std::fs::read(path).expect("raw file");
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A server process on 127.0.0.1 (a test's other side), killed when dropped.
pub struct LocalServer {
    child: std::process::Child,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment that points tessera's S3 client at a local test server (moto, or a proxy in
/// front of it) at `endpoint`, with moto's test credentials.
pub fn s3_env(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

impl LocalServer {
    /// Starts `cmd` (which must listen on `port`) and waits until the port accepts connections.
    fn start(mut cmd: Command, port: u16, what: &str) -> LocalServer {
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return LocalServer { child, port };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not start on port {port}");
    }

    /// A static file server with HTTP Range support serving `dir`.
    pub fn range_http(dir: &Path) -> LocalServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/python/range_http_server.py"))
            .arg(port.to_string())
            .arg(dir);
        LocalServer::start(cmd, port, "range_http_server.py")
    }

    /// A moto S3 server (installed by scripts/test.sh from tests/requirements.txt).
    pub fn moto_s3() -> LocalServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        LocalServer::start(cmd, port, "moto S3 server")
    }

    /// tests/python/flaky_proxy.py in front of `upstream`: every `every`-th request is answered
    /// `503 Slow Down` instead of being passed on; the number injected is kept in `count_file`.
    /// With `keys_file`, the access key ids requests were signed with are written there.
    pub fn flaky_proxy(
        upstream: u16,
        every: u32,
        count_file: &Path,
        keys_file: Option<&Path>,
    ) -> LocalServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/python/flaky_proxy.py"))
            .arg(port.to_string())
            .arg(upstream.to_string())
            .arg(every.to_string())
            .arg(count_file)
            .args(keys_file);
        LocalServer::start(cmd, port, "flaky_proxy.py")
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera evaluate --json` of `estimate` against `truth`.
pub fn evaluate(truth: &str, estimate: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "evaluate",
        "--truth",
        truth,
        "--estimate",
        estimate,
        "--json",
    ]))
    .expect("evaluate --json prints JSON")
}

/// One convention's score in an `evaluate --json` report.
pub fn score<'a>(report: &'a serde_json::Value, convention: &str) -> &'a serde_json::Value {
    report["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .find(|s| s["convention"] == convention)
        .expect("convention in report")
}

/// Simulates the small recording several tests share: 300 frames of 64x64 (base preset, seed 3),
/// in chunks of 100 x 32 x 32.
pub fn simulate_small(out: &str) {
    ok(&[
        "simulate",
        "--frames",
        "300",
        "--height",
        "64",
        "--width",
        "64",
        "--seed",
        "3",
        "--chunks",
        "100,32,32",
        "--out",
        out,
    ]);
}

/// `tessera run` of workflows/two-photon.yaml on `input` into `output` in 32-px tiles.
pub fn run_two_photon(input: &str, output: &str, extra: &[&str]) -> String {
    let workflow = example("two-photon.yaml");
    let mut args = vec![
        "run",
        &workflow,
        "--input",
        input,
        "--output",
        output,
        "--tile-size",
        "32",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}
