//! The movie a task reads: the recording itself, or the pieces earlier tasks wrote (each temporal
//! or spatiotemporal task of a movie stage stores its core box as its own recording), read as one
//! movie.

use std::ops::Range;

use ndarray::{Array3, Axis, s};
use tessera_core::task::MovieSource;
use tessera_core::{Box3, RecordingMeta, Shape3};
use tessera_io::Recording;
use tessera_kernels::extract::{ChunkVisitor, FrameChunks, PixelMovie};

use crate::WorkerError;

/// An open [`MovieSource`]. Each piece is opened when a read first touches it, so a task reads
/// only the pieces its dependencies committed (a denoising block of the second half of the frames
/// never opens the registration task of the first half).
#[derive(Debug)]
pub struct MovieReader {
    source: MovieSource,
    recs: Vec<std::sync::OnceLock<Recording>>,
}

fn intersect(a: &Range<u64>, b: &Range<u64>) -> Range<u64> {
    a.start.max(b.start)..a.end.min(b.end).max(a.start.max(b.start))
}

fn local(r: &Range<u64>, origin: u64) -> Range<usize> {
    (r.start - origin) as usize..(r.end - origin) as usize
}

impl MovieReader {
    /// A reader of `source`; its pieces are opened on first use.
    pub fn open(source: &MovieSource) -> Result<MovieReader, WorkerError> {
        Ok(MovieReader {
            source: source.clone(),
            recs: source
                .pieces
                .iter()
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        })
    }

    /// Piece `i`, opened and checked to hold exactly its core's shape on first use.
    fn piece(&self, i: usize) -> Result<&Recording, WorkerError> {
        if let Some(rec) = self.recs[i].get() {
            return Ok(rec);
        }
        let p = &self.source.pieces[i];
        let rec = Recording::open(&p.uri, p.array.as_deref())?;
        let [t, y, x] = p.core.shape();
        let got = rec.shape();
        if (got.t, got.y, got.x) != (t as u64, y as u64, x as u64) {
            return Err(WorkerError::Spec(format!(
                "piece {} holds {}x{}x{}, expected its box {} ({t}x{y}x{x})",
                p.uri, got.t, got.y, got.x, p.core
            )));
        }
        Ok(self.recs[i].get_or_init(|| rec))
    }

    pub fn shape(&self) -> Shape3 {
        self.source.shape
    }

    pub fn meta(&self) -> &RecordingMeta {
        &self.source.meta
    }

    /// Frames per storage chunk.
    pub fn chunk_frames(&self) -> u64 {
        self.source.chunks[0].max(1)
    }

    /// Reads box `b` as float32, from every piece it meets; refuses a non-finite sample, naming
    /// the piece and the sample's position in the whole movie.
    pub fn read(&self, b: &Box3) -> Result<Array3<f32>, WorkerError> {
        let mut out = Array3::<f32>::zeros(b.shape());
        let mut covered = 0usize;
        for (i, p) in self.source.pieces.iter().enumerate() {
            let (t, y, x) = (
                intersect(&p.core.t, &b.t),
                intersect(&p.core.y, &b.y),
                intersect(&p.core.x, &b.x),
            );
            if t.is_empty() || y.is_empty() || x.is_empty() {
                continue;
            }
            let inner = Box3 {
                t: t.start - p.core.t.start..t.end - p.core.t.start,
                y: y.start - p.core.y.start..y.end - p.core.y.start,
                x: x.start - p.core.x.start..x.end - p.core.x.start,
            };
            let mut data = out.slice_mut(s![
                local(&t, b.t.start),
                local(&y, b.y.start),
                local(&x, b.x.start)
            ]);
            let rec = self.piece(i)?;
            rec.read_box_f32_into(&inner, data.view_mut())?;
            // Every integer converts to a finite float32; only float pieces need the scan.
            let non_finite = if rec.dtype().is_float() {
                data.indexed_iter().find(|(_, v)| !v.is_finite())
            } else {
                None
            };
            if let Some(((dt, dy, dx), v)) = non_finite {
                return Err(WorkerError::Data(format!(
                    "{} holds a non-finite value ({v}) at frame {}, pixel ({}, {}): the analysis needs finite data (crop or fill such pixels first)",
                    p.uri,
                    t.start as usize + dt,
                    y.start as usize + dy,
                    x.start as usize + dx
                )));
            }
            covered += data.len();
        }
        if covered != out.len() {
            return Err(WorkerError::Spec(format!(
                "the movie's pieces cover {covered} of the {} samples of box {b}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Reads rows `y` and columns `x` over all frames, averaging runs of `bin` frames into one
    /// (the last run may be shorter), a storage chunk of frames at a time into one array.
    pub fn read_binned(
        &self,
        y: Range<u64>,
        x: Range<u64>,
        bin: u64,
    ) -> Result<Array3<f32>, WorkerError> {
        let shape = self.shape();
        let bin = bin.max(1);
        let slab = self.chunk_frames().div_ceil(bin) * bin;
        let frames = shape.t.div_ceil(bin) as usize;
        let mut out = Array3::<f32>::zeros((
            frames,
            (y.end - y.start) as usize,
            (x.end - x.start) as usize,
        ));
        let mut t0 = 0;
        while t0 < shape.t {
            let t1 = (t0 + slab).min(shape.t);
            let block = self.read(&Box3::within(&shape, t0..t1, y.clone(), x.clone())?)?;
            if bin == 1 {
                out.slice_mut(s![t0 as usize..t1 as usize, .., ..])
                    .assign(&block);
            } else {
                for (i, group) in block.axis_chunks_iter(Axis(0), bin as usize).enumerate() {
                    let mut dst = out.index_axis_mut(Axis(0), (t0 / bin) as usize + i);
                    for frame in group.outer_iter() {
                        dst += &frame;
                    }
                    dst /= group.len_of(Axis(0)) as f32;
                }
            }
            t0 = t1;
        }
        Ok(out)
    }

    /// Runs of whole frames, aligned to the storage chunks, of at most `frames` frames each (at
    /// least one chunk).
    pub fn frame_runs(&self, frames: u64) -> Vec<Range<usize>> {
        let t = self.shape().t;
        let ct = self.chunk_frames();
        let per = (frames / ct).max(1) * ct;
        (0..t.div_ceil(per))
            .map(|i| (i * per) as usize..((i + 1) * per).min(t) as usize)
            .collect()
    }
}

/// The movie streamed as runs of whole frames (refit, QC, summaries). When one run holds every
/// frame, the movie is read once and kept for the passes that follow (the refit makes several).
#[derive(Debug)]
pub struct MovieFrames<'a> {
    reader: &'a MovieReader,
    runs: Vec<Range<usize>>,
    whole: std::sync::OnceLock<PixelMovie>,
}

impl<'a> MovieFrames<'a> {
    pub fn new(reader: &'a MovieReader, runs: Vec<Range<usize>>) -> MovieFrames<'a> {
        MovieFrames {
            reader,
            runs,
            whole: std::sync::OnceLock::new(),
        }
    }

    pub fn runs(&self) -> &[Range<usize>] {
        &self.runs
    }

    fn read_run(&self, run: &Range<usize>) -> Result<PixelMovie, WorkerError> {
        let shape = self.reader.shape();
        let frames = self.reader.read(&Box3::within(
            &shape,
            run.start as u64..run.end as u64,
            0..shape.y,
            0..shape.x,
        )?)?;
        Ok(PixelMovie::from_frames(frames.view()))
    }
}

impl FrameChunks for MovieFrames<'_> {
    type Error = WorkerError;

    fn dims(&self) -> (usize, usize, usize) {
        let s = self.reader.shape();
        (s.t as usize, s.y as usize, s.x as usize)
    }

    fn for_each_chunk(&self, visit: &mut ChunkVisitor<'_>) -> Result<(), WorkerError> {
        if let [run] = self.runs.as_slice() {
            let pm = match self.whole.get() {
                Some(pm) => pm,
                None => {
                    let pm = self.read_run(run)?;
                    self.whole.get_or_init(|| pm)
                }
            };
            visit(run.clone(), pm.data.view())?;
            return Ok(());
        }
        for run in &self.runs {
            let pm = self.read_run(run)?;
            visit(run.clone(), pm.data.view())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ndarray::{Array3, s};
    use tessera_core::task::{MovieSource, Piece};
    use tessera_core::{Box3, RecordingMeta, Shape3};
    use tessera_io::{Output, RecordingWriter, WriteOptions};

    use super::MovieReader;

    fn write(path: &std::path::Path, data: &Array3<f32>) -> String {
        let uri = path.to_str().unwrap().to_string();
        let out = Output::create(&uri, true).unwrap();
        let (t, y, x) = data.dim();
        let options = WriteOptions {
            chunks: [4, 8, 8],
            ..WriteOptions::default()
        };
        let mut w = RecordingWriter::<f32>::create(
            &out,
            Shape3::new(t as u64, y as u64, x as u64).unwrap(),
            &options,
        )
        .unwrap();
        w.append(data.view()).unwrap();
        w.finish().unwrap();
        out.finish().unwrap();
        uri
    }

    /// A movie cut into 2 x 2 x 2 pieces reads back, box by box and binned, exactly as the
    /// whole array sliced and averaged by hand.
    #[test]
    fn pieces_read_as_the_whole_movie() {
        let dir = tempfile::tempdir().unwrap();
        let (t, h, w) = (10u64, 12u64, 9u64);
        let whole = Array3::from_shape_fn((t as usize, h as usize, w as usize), |(a, b, c)| {
            (a * 1000 + b * 10 + c) as f32
        });
        let mut pieces = Vec::new();
        for (ti, tr) in [0..6u64, 6..t].into_iter().enumerate() {
            for (yi, yr) in [0..5u64, 5..h].into_iter().enumerate() {
                for (xi, xr) in [0..4u64, 4..w].into_iter().enumerate() {
                    let part = whole
                        .slice(s![
                            tr.start as usize..tr.end as usize,
                            yr.start as usize..yr.end as usize,
                            xr.start as usize..xr.end as usize
                        ])
                        .to_owned();
                    let uri = write(&dir.path().join(format!("p{ti}{yi}{xi}")), &part);
                    pieces.push(Piece {
                        core: Box3 {
                            t: tr.clone(),
                            y: yr.clone(),
                            x: xr.clone(),
                        },
                        uri,
                        array: Some("movie".into()),
                    });
                }
            }
        }
        let reader = MovieReader::open(&MovieSource {
            shape: Shape3::new(t, h, w).unwrap(),
            chunks: [4, 8, 8],
            meta: RecordingMeta::default(),
            pieces,
        })
        .unwrap();
        for (tr, yr, xr) in [
            (0..10u64, 0..12u64, 0..9u64),
            (3..8, 2..11, 1..7),
            (5..7, 4..6, 3..5),
            (9..10, 11..12, 8..9),
        ] {
            let b = Box3 {
                t: tr.clone(),
                y: yr.clone(),
                x: xr.clone(),
            };
            let got = reader.read(&b).unwrap();
            let want = whole.slice(s![
                tr.start as usize..tr.end as usize,
                yr.start as usize..yr.end as usize,
                xr.start as usize..xr.end as usize
            ]);
            assert_eq!(got, want, "box {b}");
        }
        // Binned by 3 (the last bin holds one frame), over rows 2..9 and columns 1..8.
        let binned = reader.read_binned(2..9, 1..8, 3).unwrap();
        assert_eq!(binned.dim(), (4, 7, 7));
        for (i, frames) in [(0, 0..3), (1, 3..6), (2, 6..9), (3, 9..10)] {
            let n = frames.len() as f32;
            let want = whole
                .slice(s![frames, 2..9, 1..8])
                .sum_axis(ndarray::Axis(0))
                .mapv(|v| v / n);
            let got = binned.index_axis(ndarray::Axis(0), i);
            assert!(
                got.iter()
                    .zip(want.iter())
                    .all(|(a, b)| (a - b).abs() < 1e-3),
                "bin {i}"
            );
        }
        // Runs of whole frames, chunk-aligned, within the asked length.
        assert_eq!(reader.frame_runs(5), vec![0..4, 4..8, 8..10]);
        assert_eq!(reader.frame_runs(1), vec![0..4, 4..8, 8..10]);
        assert_eq!(reader.frame_runs(8), vec![0..8, 8..10]);
        assert_eq!(reader.frame_runs(100), vec![0..10]);
    }
}
