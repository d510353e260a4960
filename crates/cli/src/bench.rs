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
