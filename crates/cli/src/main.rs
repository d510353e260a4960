//! `tessera`: scalable, reproducible analysis of calcium and voltage imaging.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cluster;
mod denoise;
mod evaluate;
mod export;
mod extract;
mod ingest;
mod inspect;
mod progress;
mod provenance;
mod register;
mod report;
mod run;
mod simulate;
mod summarize;
mod transform;
mod workflow;

/// tessera: scalable, reproducible analysis of calcium and voltage imaging recordings.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure throughput (see docs/BENCHMARKS.md).
    Bench(bench::Args),
    /// Local low-rank (PMD-style) denoising of a recording.
    Denoise(denoise::Args),
    /// Score ROIs against ground truth (neurofinder, CaImAn, IoU >= 0.5 and IoU + trace conventions).
    Evaluate(evaluate::Args),
    /// Find cells and their traces in a recording (one tile): detection, CNMF, QC, deconvolution.
    Extract(extract::Args),
    /// Convert a multi-page TIFF/BigTIFF or a folder of TIFF frames into a Zarr v3 recording.
    Ingest(ingest::Args),
    /// Describe a recording: shape, dtype, chunks, codecs, metadata and quick statistics.
    Inspect(inspect::Args),
    /// Rigid motion correction (phase correlation) of a recording.
    Register(register::Args),
    /// Summary images (mean, max, std, local correlation, peak-to-noise, noise) of a recording.
    Summarize(summarize::Args),
    /// Generate a simulated recording with ground truth.
    Simulate(simulate::Args),
    /// Re-hash an output and its inputs against its provenance record; name every difference.
    Verify(provenance::VerifyArgs),
    /// Show how an output was made: tool and commit, command, host, times, inputs, digests.
    Provenance(provenance::ShowArgs),
    /// Check workflow files: schema, parameters and stage order, every problem with line and column.
    Validate(workflow::ValidateArgs),
    /// List the stages a workflow may use, with their parameters, types, defaults and docs.
    Stages(workflow::StagesArgs),
    /// Print the tile plan of a workflow on a recording: tasks per stage, memory, dependencies.
    Plan(workflow::PlanArgs),
    /// Run a workflow on a recording: a coordinator and N workers in this process (loopback gRPC).
    Run(run::Args),
    /// Serve runs to clients and tasks to workers (gRPC), with durable state.
    Coordinator(cluster::CoordinatorArgs),
    /// Take tasks from a coordinator and run them until stopped (SIGTERM/SIGUSR1: drain).
    Worker(cluster::WorkerArgs),
    /// Submit a workflow run to a coordinator; prints the run id on its last line.
    Submit(cluster::SubmitArgs),
    /// Show a run's progress (--watch: follow it; exit 0 only if it succeeded).
    Status(cluster::StatusArgs),
    /// Cancel a run.
    Cancel(cluster::CancelArgs),
    /// List the coordinator's runs.
    Runs(cluster::RunsArgs),
    /// Export a finished run's results to another format (nwb).
    Export(export::Args),
    /// Write a finished run's report: one self-contained HTML page with its figures.
    Report(report::Args),
}

/// Makes freed working arrays go back to the system at once, so the process's memory follows what
/// it holds and stays within `--memory-budget`. glibc serves allocations below a threshold from
/// per-thread arenas, and by default raises that threshold (up to 32 MiB) each time a large block
/// is freed; decoded storage chunks and tile-sized arrays then stay in arenas after they are freed
/// and the resident size drifts with thread timing (measured 136-212 MB for the same 200 MB-budget
/// run, 125 MB every time with the threshold fixed; docs/BENCHMARKS.md). Fixing it also fixes the
/// trim threshold at its default, 128 KiB, so a heap gave its top back to the system after nearly
/// every frame-sized free and faulted the pages in again on the next frame; 8 MiB keeps a frame's
/// working buffers (`tessera register` on 256x256x3000: 3.5-4.8 -> 3.2 s system time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_blocks_to_the_system() {
    // SAFETY: mallopt only changes allocator tuning; it is called once, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Lets a closed pipe end the process quietly, as for other command-line tools (`tessera stages |
/// head`), instead of a panic in `println!`: Rust ignores SIGPIPE by default.
#[cfg(unix)]
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal, once, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks_to_the_system() {}

/// For a command without a memory budget (`extract` holding the whole movie, `register`
/// streaming chunk rows): serves blocks up to two of `rec`'s decoded storage chunks (a chunk and
/// its compressed bytes) from glibc's heaps instead of fresh mmaps, so their pages are reused from
/// chunk to chunk instead of faulted in again for each (the 1 MiB threshold of
/// [`return_large_blocks_to_the_system`] sends every chunk over 1 MiB to the system and back). A
/// heap keeps at most the trim threshold of freed memory per thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn keep_chunk_buffers(rec: &tessera_io::Recording) {
    let [ct, cy, cx] = rec.chunks();
    let chunk = ct.saturating_mul(cy).saturating_mul(cx) as usize * rec.dtype().size();
    // glibc caps the threshold at 32 MiB (half its heap size).
    let threshold = chunk
        .saturating_mul(2)
        .saturating_add(1 << 16)
        .clamp(1 << 20, 32 << 20);
    // SAFETY: mallopt only changes allocator tuning; glibc serialises it with allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold as libc::c_int);
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            (4 * threshold).max(8 << 20) as libc::c_int,
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn keep_chunk_buffers(_rec: &tessera_io::Recording) {}

fn main() -> ExitCode {
    return_large_blocks_to_the_system();
    let cli = Cli::parse();
    // Commands that talk over the network keep SIGPIPE ignored: a peer closing a socket (a TLS
    // server answering a plain connection, a coordinator going away) must be an error to
    // handle, not the end of the process. The others end quietly on a closed pipe.
    if !matches!(
        cli.command,
        Command::Run(_)
            | Command::Coordinator(_)
            | Command::Worker(_)
            | Command::Submit(_)
            | Command::Status(_)
            | Command::Cancel(_)
            | Command::Runs(_)
            | Command::Bench(_)
    ) {
        default_sigpipe();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Two TLS backends are linked (ring for gRPC, aws-lc for the object stores' HTTPS): say
    // which one rustls uses, once, before any connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::Denoise(a) => denoise::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Register(a) => register::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Summarize(a) => summarize::run(a),
        Command::Validate(a) => workflow::validate(a),
        Command::Verify(a) => provenance::verify(a),
        Command::Provenance(a) => provenance::show(a),
        Command::Stages(a) => workflow::stages(a),
        Command::Plan(a) => workflow::plan(a),
        Command::Run(a) => run::run(a),
        Command::Coordinator(a) => cluster::coordinator(a),
        Command::Worker(a) => cluster::worker(a),
        Command::Submit(a) => cluster::submit(a),
        Command::Status(a) => cluster::status(a),
        Command::Cancel(a) => cluster::cancel(a),
        Command::Runs(a) => cluster::runs(a),
        Command::Export(a) => export::run(a),
        Command::Report(a) => report::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
