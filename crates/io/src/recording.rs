//! Reading a recording: a 3-D (t, y, x) Zarr v2 or v3 array of any integer or float type.

use ndarray::{Array3, ArrayViewMut3, Axis, Ix3};
use rayon::prelude::*;
use serde_json::Value;
use tessera_core::{Box3, Dtype, META_ATTRIBUTE, RecordingMeta, Shape3};
use zarrs::array::{Array, ArrayBytes, ArraySubset, ElementOwned};
use zarrs::metadata::ArrayMetadata;
use zarrs::node::{NodePath, meta_key_v2_array, meta_key_v2_group, meta_key_v3};
use zarrs::storage::{ReadableStorageTraits, ReadableWritableListableStorageTraits};

use crate::{IoError, Location, Store};

/// Array paths tried, in order, when a recording's location is a group and no array path is given.
pub const DEFAULT_ARRAY_PATHS: [&str; 3] = ["movie", "data", "0"];

/// Write status stored by tessera in its attribute; anything but complete is refused on open.
pub(crate) const STATUS_COMPLETE: &str = "complete";

/// An opened recording.
pub struct Recording {
    store: Store,
    path: String,
    array: Array<dyn ReadableWritableListableStorageTraits>,
    shape: Shape3,
    dtype: Dtype,
    meta: RecordingMeta,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("location", self.store.location())
            .field("path", &self.path)
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .finish()
    }
}

/// What kind of Zarr node sits at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Array,
    Group,
}

fn node_kind(store: &Store, path: &str) -> Result<Option<NodeKind>, IoError> {
    let np =
        NodePath::new(path).map_err(|e| IoError::Invalid(format!("array path '{path}': {e}")))?;
    let s = store.storage();
    let get = |key: zarrs::storage::StoreKey| {
        s.get(&key).map_err(|e| IoError::Store {
            location: store.location().to_string(),
            reason: format!("reading '{key}': {e}"),
        })
    };
    if let Some(bytes) = get(meta_key_v3(&np))? {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| IoError::Read {
            location: store.location().to_string(),
            path: path.to_string(),
            what: "metadata zarr.json".into(),
            reason: e.to_string(),
        })?;
        return Ok(match v.get("node_type").and_then(Value::as_str) {
            Some("array") => Some(NodeKind::Array),
            Some("group") => Some(NodeKind::Group),
            _ => None,
        });
    }
    if get(meta_key_v2_array(&np))?.is_some() {
        return Ok(Some(NodeKind::Array));
    }
    if get(meta_key_v2_group(&np))?.is_some() {
        return Ok(Some(NodeKind::Group));
    }
    Ok(None)
}

fn normalise_path(path: &str) -> String {
    let p = path.trim_matches('/');
    if p.is_empty() {
        "/".to_string()
    } else {
        format!("/{p}")
    }
}

impl Recording {
    /// Opens the recording at `uri`. `array_path` names the array inside the store; when `None`, the
    /// root is used if it is an array, else the first of [`DEFAULT_ARRAY_PATHS`] that exists.
    pub fn open(uri: &str, array_path: Option<&str>) -> Result<Recording, IoError> {
        let location = Location::parse(uri)?;
        if let Location::File(p) = &location
            && !p.exists()
        {
            return Err(IoError::File {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            });
        }
        let store = Store::open(&location)?;
        Recording::open_in(store, array_path)
    }

    /// Opens a recording in an already opened store.
    pub fn open_in(store: Store, array_path: Option<&str>) -> Result<Recording, IoError> {
        let loc = store.location().to_string();
        store.check_complete()?;
        let path = match array_path {
            Some(p) => {
                let p = normalise_path(p);
                match node_kind(&store, &p)? {
                    Some(NodeKind::Array) => p,
                    Some(NodeKind::Group) => {
                        return Err(IoError::IsGroup {
                            location: loc,
                            path: p,
                            hint: String::new(),
                        });
                    }
                    None => {
                        return Err(IoError::NotZarr {
                            location: loc,
                            path: p,
                        });
                    }
                }
            }
            None => match node_kind(&store, "/")? {
                Some(NodeKind::Array) => "/".to_string(),
                // A group, or no root metadata at all (zarr-python can write arrays below a root
                // without metadata): look for the default array names.
                root => {
                    let mut found = None;
                    for candidate in DEFAULT_ARRAY_PATHS {
                        let p = normalise_path(candidate);
                        if node_kind(&store, &p)? == Some(NodeKind::Array) {
                            found = Some(p);
                            break;
                        }
                    }
                    match (found, root) {
                        (Some(p), _) => p,
                        (None, Some(_)) => {
                            return Err(IoError::IsGroup {
                                location: loc.clone(),
                                path: "/".into(),
                                hint: format!(
                                    " and holds none of the default arrays ({}); name the array with --array",
                                    DEFAULT_ARRAY_PATHS.join(", ")
                                ),
                            });
                        }
                        (None, None) => {
                            return Err(IoError::NotZarr {
                                location: loc,
                                path: "/".into(),
                            });
                        }
                    }
                }
            },
        };
        let read_err = |what: &str, reason: String| IoError::Read {
            location: store.location().to_string(),
            path: path.clone(),
            what: what.to_string(),
            reason,
        };
        let array = Array::open(store.storage().clone(), &path)
            .map_err(|e| read_err("metadata", e.to_string()))?;
        let ndim = array.dimensionality();
        if ndim != 3 {
            return Err(IoError::NotThreeD {
                location: loc,
                path,
                ndim,
            });
        }
        let dtype_name = array
            .data_type()
            .name_v3()
            .map(|c| c.into_owned())
            .unwrap_or_else(|| array.data_type().to_string());
        let dtype = Dtype::parse(&dtype_name).map_err(|_| IoError::UnsupportedDtype {
            location: loc.clone(),
            path: path.clone(),
            dtype: dtype_name.clone(),
        })?;
        let s = array.shape();
        let shape = Shape3::new(s[0], s[1], s[2]).map_err(IoError::Core)?;
        let mut meta = RecordingMeta::default();
        if let Some(attr) = array.attributes().get(META_ATTRIBUTE) {
            if let Some(status) = attr.get("status").and_then(Value::as_str)
                && status != STATUS_COMPLETE
            {
                return Err(IoError::Incomplete {
                    location: loc,
                    path,
                    status: status.to_string(),
                });
            }
            if let Some(m) = attr.get("recording") {
                meta = serde_json::from_value(m.clone())
                    .map_err(|e| read_err("tessera metadata attribute", e.to_string()))?;
            }
        }
        Ok(Recording {
            store,
            path,
            array,
            shape,
            dtype,
            meta,
        })
    }

    /// The store holding the recording.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Path of the array inside the store (`/` for a root array).
    pub fn array_path(&self) -> &str {
        &self.path
    }

    pub fn shape(&self) -> Shape3 {
        self.shape
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Acquisition metadata recorded by tessera (empty for arrays written by other tools).
    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// All attributes of the array.
    pub fn attributes(&self) -> &serde_json::Map<String, Value> {
        self.array.attributes()
    }

    /// Zarr format version (2 or 3).
    pub fn zarr_format(&self) -> u8 {
        match self.array.metadata() {
            ArrayMetadata::V3(_) => 3,
            ArrayMetadata::V2(_) => 2,
        }
    }

    /// Storage chunk shape `[t, y, x]` (for sharded arrays, the shard).
    pub fn chunks(&self) -> [u64; 3] {
        let c = self
            .array
            .chunk_shape(&[0, 0, 0])
            .map(|c| c.iter().map(|n| n.get()).collect::<Vec<_>>())
            .unwrap_or_else(|_| self.shape.to_array().to_vec());
        [c[0], c[1], c[2]]
    }

    /// Inner chunk shape of a sharded array.
    pub fn subchunks(&self) -> Option<[u64; 3]> {
        use zarrs::array::ArrayShardedExt;
        self.array
            .subchunk_shape()
            .map(|c| [c[0].get(), c[1].get(), c[2].get()])
    }

    /// The codec chain as names with their configuration, e.g. `bytes`, `zstd(level=3)`,
    /// `sharding_indexed[...]` (v3) or `blosc(cname=lz4, clevel=5)` (v2 compressor and filters).
    pub fn codecs(&self) -> Vec<String> {
        fn describe(name: &str, config: Option<&serde_json::Map<String, Value>>) -> String {
            let Some(cfg) = config.filter(|c| !c.is_empty()) else {
                return name.to_string();
            };
            let parts: Vec<String> = cfg
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    Value::Array(items) if k == "codecs" => {
                        let inner: Vec<String> = items
                            .iter()
                            .map(|c| {
                                describe(
                                    c.get("name").and_then(Value::as_str).unwrap_or("?"),
                                    c.get("configuration").and_then(Value::as_object),
                                )
                            })
                            .collect();
                        format!("codecs=[{}]", inner.join(", "))
                    }
                    other => format!("{k}={other}"),
                })
                .collect();
            format!("{name}({})", parts.join(", "))
        }
        match self.array.metadata() {
            ArrayMetadata::V3(m) => m
                .codecs
                .iter()
                .map(|c| describe(c.name(), c.configuration().map(|c| &**c)))
                .collect(),
            ArrayMetadata::V2(m) => {
                let mut out = Vec::new();
                for f in m.filters.iter().flatten() {
                    out.push(describe(f.id(), Some(f.configuration())));
                }
                match &m.compressor {
                    Some(c) => out.push(describe(c.id(), Some(c.configuration()))),
                    None => out.push("uncompressed".into()),
                }
                out
            }
        }
    }

    /// Reads a box in the array's own element type. `T` must match [`Recording::dtype`].
    pub fn read_box_as<T: ElementOwned>(&self, b: &Box3) -> Result<Array3<T>, IoError> {
        let b = Box3::within(&self.shape, b.t.clone(), b.y.clone(), b.x.clone())?;
        let ranges = b.ranges();
        let subset = ArraySubset::new_with_ranges(&ranges);
        match self
            .array
            .retrieve_array_subset::<ndarray::ArrayD<T>>(&subset)
        {
            Ok(a) => a.into_dimensionality::<Ix3>().map_err(|e| IoError::Read {
                location: self.store.location().to_string(),
                path: self.path.clone(),
                what: format!("box {b}"),
                reason: e.to_string(),
            }),
            Err(e) => Err(self.locate_failure(&subset, &b, e.to_string())),
        }
    }

    /// Reads a box converted to f32 (exact for integer types up to 24 bits).
    pub fn read_box_f32(&self, b: &Box3) -> Result<Array3<f32>, IoError> {
        if self.dtype == Dtype::Float32 {
            return self.read_box_as::<f32>(b);
        }
        let b = Box3::within(&self.shape, b.t.clone(), b.y.clone(), b.x.clone())?;
        let mut out = Array3::<f32>::zeros(b.shape());
        self.read_box_f32_into(&b, out.view_mut())?;
        Ok(out)
    }

    /// [`Self::read_box_f32`] into `out` (the box's shape). The chunks the box touches are decoded
    /// in parallel, each straight into its part of `out`: the only temporaries are one decoded
    /// chunk per thread at a time, not a copy of the box in the stored type.
    pub fn read_box_f32_into(&self, b: &Box3, out: ArrayViewMut3<f32>) -> Result<(), IoError> {
        let b = Box3::within(&self.shape, b.t.clone(), b.y.clone(), b.x.clone())?;
        if out.shape() != b.shape() {
            return Err(IoError::Invalid(format!(
                "box {b} is {:?} samples, the array given for it {:?}",
                b.shape(),
                out.shape()
            )));
        }
        if out.is_empty() {
            return Ok(());
        }
        let pieces = self.chunk_pieces(&b, out)?;
        macro_rules! conv {
            ($t:ty) => {
                pieces.into_par_iter().try_for_each(|piece| {
                    self.decode_piece(piece, |bytes, row| {
                        const N: usize = std::mem::size_of::<$t>();
                        for (d, v) in row.iter_mut().zip(bytes.chunks_exact(N)) {
                            let mut ne = [0u8; N];
                            ne.copy_from_slice(v);
                            *d = <$t>::from_ne_bytes(ne) as f32;
                        }
                    })
                })
            };
        }
        match self.dtype {
            Dtype::Uint8 => conv!(u8),
            Dtype::Uint16 => conv!(u16),
            Dtype::Uint32 => conv!(u32),
            Dtype::Uint64 => conv!(u64),
            Dtype::Int8 => conv!(i8),
            Dtype::Int16 => conv!(i16),
            Dtype::Int32 => conv!(i32),
            Dtype::Int64 => conv!(i64),
            Dtype::Float32 => conv!(f32),
            Dtype::Float64 => conv!(f64),
        }
    }

    /// Splits `out`, the array for box `b`, at the chunk boundaries that cross the box: one piece
    /// per chunk the box touches, with the chunk's indices and the part of the chunk it holds.
    fn chunk_pieces<'a>(
        &self,
        b: &Box3,
        out: ArrayViewMut3<'a, f32>,
    ) -> Result<Vec<ChunkPiece<'a>>, IoError> {
        let ranges = b.ranges();
        let invalid = |e: String| IoError::Read {
            location: self.store.location().to_string(),
            path: self.path.clone(),
            what: format!("box {b}"),
            reason: e,
        };
        let subset = ArraySubset::new_with_ranges(&ranges);
        let chunks = self
            .array
            .chunks_in_array_subset(&subset)
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid("the chunk grid does not cover the box".into()))?;
        let first = chunks.start().to_vec();
        // Each axis's chunks, read off the grid along that axis (the grid is rectilinear: an
        // axis's boundaries do not depend on the other axes' indices).
        let mut axes: Vec<Vec<AxisSpan>> = Vec::with_capacity(3);
        for axis in 0..3 {
            let mut spans = Vec::new();
            for i in chunks.start()[axis]..chunks.end_exc()[axis] {
                let mut idx = first.clone();
                idx[axis] = i;
                let c = self
                    .array
                    .chunk_subset(&idx)
                    .map_err(|e| invalid(e.to_string()))?;
                let (c0, cn) = (c.start()[axis], c.shape()[axis]);
                let lo = c0.max(ranges[axis].start);
                let hi = (c0 + cn).min(ranges[axis].end);
                if lo < hi {
                    let base = ranges[axis].start;
                    spans.push(AxisSpan {
                        chunk: i,
                        end: (hi - base) as usize,
                        within: lo - c0..hi - c0,
                        whole: lo == c0 && hi == c0 + cn,
                    });
                }
            }
            axes.push(spans);
        }
        let mut pieces = Vec::new();
        for (t_views, t) in split_along(out, Axis(0), &axes[0])
            .into_iter()
            .zip(&axes[0])
        {
            for (y_views, y) in split_along(t_views, Axis(1), &axes[1])
                .into_iter()
                .zip(&axes[1])
            {
                for (view, x) in split_along(y_views, Axis(2), &axes[2])
                    .into_iter()
                    .zip(&axes[2])
                {
                    pieces.push(ChunkPiece {
                        chunk: vec![t.chunk, y.chunk, x.chunk],
                        within: ArraySubset::new_with_ranges(&[
                            t.within.clone(),
                            y.within.clone(),
                            x.within.clone(),
                        ]),
                        whole: t.whole && y.whole && x.whole,
                        out: view,
                    });
                }
            }
        }
        Ok(pieces)
    }

    /// Decodes one piece of a box and writes it into the piece's part of the output, a row of x
    /// at a time: `row(bytes, out)` converts one row of decoded samples (native byte order, as
    /// the codec chain hands them over) into `out`.
    fn decode_piece(
        &self,
        piece: ChunkPiece<'_>,
        row: impl Fn(&[u8], &mut [f32]),
    ) -> Result<(), IoError> {
        let ChunkPiece {
            chunk,
            within,
            whole,
            mut out,
        } = piece;
        let failed = |reason: String| IoError::Chunk {
            location: self.store.location().to_string(),
            path: self.path.clone(),
            chunk: chunk.clone(),
            key: self.array.chunk_key(&chunk).to_string(),
            reason,
        };
        let decoded = if whole {
            self.array.retrieve_chunk::<ArrayBytes<'static>>(&chunk)
        } else {
            self.array
                .retrieve_chunk_subset::<ArrayBytes<'static>>(&chunk, &within)
        };
        let bytes = decoded
            .map_err(|e| failed(e.to_string()))?
            .into_fixed()
            .map_err(|e| failed(e.to_string()))?;
        let item = self.dtype.size();
        let width = out.dim().2;
        if bytes.len() != out.len() * item {
            return Err(failed(format!(
                "decoded {} bytes, expected {} samples of {item} bytes",
                bytes.len(),
                out.len()
            )));
        }
        for (mut dst, src) in out
            .rows_mut()
            .into_iter()
            .zip(bytes.chunks_exact(width * item))
        {
            match dst.as_slice_mut() {
                Some(d) => row(src, d),
                None => {
                    let mut buf = vec![0.0; width];
                    row(src, &mut buf);
                    dst.assign(&ndarray::ArrayView1::from(&buf));
                }
            }
        }
        Ok(())
    }

    /// After a failed read, finds the first chunk of the box that cannot be decoded, so the error
    /// names the chunk and its key.
    fn locate_failure(&self, subset: &ArraySubset, b: &Box3, reason: String) -> IoError {
        if let Ok(Some(chunks)) = self.array.chunks_in_array_subset(subset) {
            for idx in chunks.indices() {
                if let Err(e) = self
                    .array
                    .retrieve_chunk::<zarrs::array::ArrayBytes<'static>>(&idx)
                {
                    return IoError::Chunk {
                        location: self.store.location().to_string(),
                        path: self.path.clone(),
                        chunk: idx.to_vec(),
                        key: self.array.chunk_key(&idx).to_string(),
                        reason: e.to_string(),
                    };
                }
            }
        }
        IoError::Read {
            location: self.store.location().to_string(),
            path: self.path.clone(),
            what: format!("box {b}"),
            reason,
        }
    }
}

/// One chunk's share of a box being read: the chunk's grid indices, the part of the chunk inside
/// the box, and where that part goes.
struct ChunkPiece<'a> {
    chunk: Vec<u64>,
    within: ArraySubset,
    /// The box covers the whole chunk (decoded without a partial decoder).
    whole: bool,
    out: ArrayViewMut3<'a, f32>,
}

/// One chunk of the grid along one axis of a box being read.
struct AxisSpan {
    /// The chunk's index along the axis.
    chunk: u64,
    /// Where the chunk's part ends in the box (it starts where the previous one ended).
    end: usize,
    /// The part of the chunk inside the box, in the chunk's own coordinates.
    within: std::ops::Range<u64>,
    /// The box covers the chunk along this axis.
    whole: bool,
}

/// `view` cut along `axis` at the spans' boundaries (spans are consecutive and cover the axis).
fn split_along<'a>(
    view: ArrayViewMut3<'a, f32>,
    axis: Axis,
    spans: &[AxisSpan],
) -> Vec<ArrayViewMut3<'a, f32>> {
    let mut parts = Vec::with_capacity(spans.len());
    let mut rest = view;
    let mut at = 0;
    for &AxisSpan { end, .. } in spans {
        let (head, tail) = rest.split_at(axis, end - at);
        parts.push(head);
        rest = tail;
        at = end;
    }
    parts
}
