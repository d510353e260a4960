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
}

/// Runs a plan of no-op tasks through `tessera_coordinator::step`.
fn bench_scheduler(tasks: usize, workers: usize, slots: usize) -> anyhow::Result<()> {
    use tessera_coordinator::{Action, Event, Outcome, Policy, Run, RunStatus, step};
    let started = Instant::now();
    let first = tasks / 2;
    let plan: Vec<(String, Vec<usize>)> = (0..tasks)
        .map(|i| {
            let deps = if i < first || first == 0 {
                Vec::new()
            } else {
                let j = i - first;
                vec![j, (j + 1) % first]
            };
            (format!("{i:064x}"), deps)
        })
        .collect();
    let mut run = Run::new(plan, Policy::default())?;
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
