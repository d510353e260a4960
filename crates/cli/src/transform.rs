//! The arguments every processing command shares: a recording in, an output location out.

use anyhow::Context;
use ndarray::{Array3, ArrayView3, s};
use tessera_core::Box3;
use tessera_io::{Location, Output, Recording};

/// Streams `rec` as blocks of whole frames, one chunk row at a time (at least `min_frames` frames
/// per block, except the last), calling `f(first_frame, block)` in order. The blocks are read into
/// one reused buffer, so a long recording does not fault in a fresh block-sized array per row. Read
/// errors name the frames.
pub fn for_each_chunk_row(
    rec: &Recording,
    min_frames: u64,
    mut f: impl FnMut(u64, ArrayView3<f32>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let shape = rec.shape();
    let ct = rec.chunks()[0].max(min_frames).max(1);
    let (h, w) = (shape.y as usize, shape.x as usize);
    let mut buffer = Array3::<f32>::zeros((ct.min(shape.t) as usize, h, w));
    let mut t = 0;
    while t < shape.t {
        let end = (t + ct).min(shape.t);
        let mut block = buffer.slice_mut(s![..(end - t) as usize, .., ..]);
        rec.read_box_f32_into(
            &Box3::within(&shape, t..end, 0..shape.y, 0..shape.x)?,
            block.view_mut(),
        )
        .with_context(|| format!("failed to read frames {t}..{end}"))?;
        f(t, block.view())?;
        t = end;
    }
    Ok(())
}

/// A recording read and an output written (`register`, `summarize`, `extract`).
#[derive(Debug, clap::Args)]
pub struct Transform {
    /// Input recording (path, file://, memory://, s3://, gs://, http(s)://).
    pub uri: String,
    /// Array path inside the input store (default: the root array, else movie, data or 0).
    #[arg(long)]
    pub array: Option<String>,
    /// Output location.
    #[arg(short, long)]
    pub out: String,
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
}

impl Transform {
    /// Opens the input after checking that the output does not overlap it.
    pub fn open_input(&self) -> anyhow::Result<Recording> {
        refuse_overlap(&self.uri, &self.out)?;
        Recording::open(&self.uri, self.array.as_deref())
            .with_context(|| format!("failed to open recording {}", self.uri))
    }

    /// Prepares the output (refused if it exists, unless --overwrite).
    pub fn create_output(&self) -> anyhow::Result<Output> {
        Output::create(&self.out, self.overwrite)
            .with_context(|| format!("cannot write to {}", self.out))
    }
}

/// Refuses an output location that is the input, inside it, or contains it: with `--overwrite` on an
/// object store the old output is erased before the input would be read.
pub fn refuse_overlap(input: &str, output: &str) -> anyhow::Result<()> {
    let key = |uri: &str| -> anyhow::Result<String> {
        Ok(match Location::parse(uri)? {
            Location::File(p) => {
                let abs = if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir()?.join(p)
                };
                format!(
                    "file://{}/",
                    abs.display().to_string().trim_end_matches('/')
                )
            }
            other => format!("{}/", other.to_string().trim_end_matches('/')),
        })
    };
    let (i, o) = (key(input)?, key(output)?);
    if i.starts_with(&o) || o.starts_with(&i) {
        anyhow::bail!(
            "output {output} overlaps input {input}: write the result to a separate location"
        );
    }
    Ok(())
}

/// Parses a byte size such as `2GiB` or `500MB` (the workflow's `resources.memory_per_task`
/// syntax), for clap.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    tessera_workflow::parse_bytes(s)
}

/// The process's peak resident memory (VmHWM) in bytes, where the system reports it (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    tessera_io::provenance::peak_rss_bytes()
}

/// The recording `rec` (opened from `uri`) as a one-piece movie for the worker's readers.
pub fn whole(rec: &tessera_io::Recording, uri: &str) -> tessera_worker::MovieSource {
    tessera_worker::MovieSource {
        shape: rec.shape(),
        chunks: rec.chunks(),
        meta: rec.meta().clone(),
        pieces: vec![tessera_worker::Piece {
            core: rec.shape().full_box(),
            uri: uri.to_string(),
            array: Some(rec.array_path().to_string()),
        }],
    }
}
