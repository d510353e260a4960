//! Writing a recording as a Zarr v3 array, frame block by frame block, so that nothing half-written
//! ever looks complete.
//!
//! Two guards, because readers differ:
//! - on a filesystem the recording is written under a hidden sibling `.<name>.partial` and renamed
//!   into place by [`RecordingWriter::finish`]; an interrupted write leaves no `<name>` at all;
//! - everywhere (and for readers that open the hidden folder), the array's `tessera` attribute says
//!   `"status": "incomplete"` until `finish` rewrites it as `"complete"`, and
//!   [`crate::Recording::open`] refuses incomplete arrays.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array3, ArrayD, ArrayView3, Axis, concatenate};
use serde_json::json;
use tessera_core::{Dtype, META_ATTRIBUTE, RecordingMeta, Shape3};
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{Array, ArrayBuilder, Element};
use zarrs::group::GroupBuilder;
use zarrs::storage::{
    ListableStorageTraits, ReadableWritableListableStorageTraits, StorePrefix,
    WritableStorageTraits,
};

use crate::recording::STATUS_COMPLETE;
use crate::{IoError, Location, Store};

/// Default chunk shape for recordings: 64 frames x 128 x 128 pixels (2 MiB of uint16). Temporal
/// stages read whole-field slabs of 64 frames; spatial tiles of 128 px read a column of chunks;
/// both touch few bytes they do not need.
pub const DEFAULT_CHUNKS: [u64; 3] = [64, 128, 128];

/// zstd level for the movies a stage derives from another (registered, denoised, worker pieces).
/// On a registered uint16 two-photon movie level 1 compresses about 4.6x faster than level 3
/// (660 vs 140 MB/s on one core) for files 7% larger (0.653 vs 0.612 of the raw size); such movies
/// are written once and read once or twice, so the time matters more than the bytes. Ingested
/// recordings keep level 3 ([`WriteOptions::default`]).
pub const DERIVED_ZSTD_LEVEL: i32 = 1;

/// How to write a recording.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Array path inside the output group.
    pub array_path: String,
    /// Chunk shape `[t, y, x]`; clipped to the recording's shape.
    pub chunks: [u64; 3],
    /// zstd compression level (1-22; 0 means zstd's default, 3).
    pub zstd_level: i32,
    /// Replace an existing output.
    pub overwrite: bool,
    pub meta: RecordingMeta,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            array_path: "movie".into(),
            chunks: DEFAULT_CHUNKS,
            zstd_level: 3,
            overwrite: false,
            meta: RecordingMeta::default(),
        }
    }
}

/// Zarr data types for Rust element types the writer accepts.
pub trait Sample:
    Element
    + zarrs::array::ElementOwned
    + Into<zarrs::array::builder::ArrayBuilderFillValue>
    + Copy
    + Default
    + Send
    + Sync
    + 'static
{
    const DTYPE: Dtype;
    /// Converts a computed value: rounded to nearest and saturated for integer types (NaN -> 0).
    fn from_f32(v: f32) -> Self;
}

macro_rules! sample {
    ($t:ty, $d:expr) => {
        impl Sample for $t {
            const DTYPE: Dtype = $d;
            fn from_f32(v: f32) -> Self {
                // `as` from float saturates at the type's bounds and maps NaN to 0.
                v.round() as $t
            }
        }
    };
}
sample!(u8, Dtype::Uint8);
sample!(u16, Dtype::Uint16);
sample!(u32, Dtype::Uint32);
sample!(u64, Dtype::Uint64);
sample!(i8, Dtype::Int8);
sample!(i16, Dtype::Int16);
sample!(i32, Dtype::Int32);
sample!(i64, Dtype::Int64);

impl Sample for f32 {
    const DTYPE: Dtype = Dtype::Float32;
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Sample for f64 {
    const DTYPE: Dtype = Dtype::Float64;
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
}

type DynArray = Array<dyn ReadableWritableListableStorageTraits>;

/// An output location being written: the store (possibly a hidden staging folder) and what to do
/// when writing finishes.
#[derive(Debug)]
pub struct Output {
    store: Store,
    target: Location,
    /// For filesystem outputs: (staging folder, final folder).
    staging: Option<(PathBuf, PathBuf)>,
    /// Attributes of the root group; its `tessera.status` stays `incomplete` until `finish`.
    root: std::sync::Mutex<serde_json::Map<String, serde_json::Value>>,
    /// The provenance record to write with the manifest when the output is finished.
    provenance: std::sync::Mutex<Option<serde_json::Value>>,
    finished: bool,
    /// Keep the staging folder when dropped unfinished (a resumable run).
    keep_unfinished: bool,
}

impl Output {
    /// Prepares `uri` for writing: refuses an existing output unless `overwrite`, and stages
    /// filesystem outputs in a hidden sibling folder.
    pub fn create(uri: &str, overwrite: bool) -> Result<Output, IoError> {
        Output::open(uri, overwrite, false).map(|(o, _)| o)
    }

    /// Like [`Output::create`], but written in place (no staging folder: the root's `incomplete`
    /// status, which readers refuse, guards it as on object stores), and an unfinished earlier
    /// write to `uri` (an interrupted run) is kept, to be resumed. Dropped unfinished, the output
    /// stays as it is, marked incomplete, for the next attempt. Returns whether something was
    /// resumed. Used for runs, whose tasks commit their outputs inside the run's output one by
    /// one, at the paths their records name.
    pub fn resume(uri: &str, overwrite: bool) -> Result<(Output, bool), IoError> {
        Output::open(uri, overwrite, true)
    }

    /// Leaves an output from [`Output::resume`] unfinished on purpose, marked incomplete, for
    /// others to write into and finish (a run's tasks and its publish task).
    pub fn hand_over(mut self) {
        self.finished = true;
    }

    fn in_place(
        target: Location,
        path: &std::path::Path,
        overwrite: bool,
    ) -> Result<(Output, bool), IoError> {
        let file_err = |source| IoError::File {
            path: path.to_path_buf(),
            source,
        };
        let unfinished = path.is_dir()
            && matches!(
                Store::open(&target).and_then(|s| s.check_complete()),
                Err(IoError::Incomplete { .. })
            );
        if path.exists() && !unfinished {
            if !overwrite {
                return Err(IoError::Exists(path.display().to_string()));
            }
            if path.is_dir() {
                std::fs::remove_dir_all(path).map_err(file_err)?;
            } else {
                std::fs::remove_file(path).map_err(file_err)?;
            }
        }
        std::fs::create_dir_all(path).map_err(file_err)?;
        let output = Output {
            store: Store::open(&target)?,
            target,
            staging: None,
            root: Default::default(),
            provenance: Default::default(),
            finished: false,
            keep_unfinished: true,
        };
        output.write_group(serde_json::Map::new())?;
        Ok((output, unfinished))
    }

    fn open(uri: &str, overwrite: bool, resume: bool) -> Result<(Output, bool), IoError> {
        crate::configure_zarrs();
        let target = Location::parse(uri)?;
        if !target.is_writable() {
            return Err(IoError::ReadOnly {
                location: target.to_string(),
            });
        }
        match &target {
            Location::File(path) => {
                if resume {
                    return Output::in_place(target.clone(), path, overwrite);
                }
                if path.exists() && !overwrite {
                    return Err(IoError::Exists(path.display().to_string()));
                }
                let name = path
                    .file_name()
                    .ok_or_else(|| {
                        IoError::Invalid(format!("output path {} has no name", path.display()))
                    })?
                    .to_string_lossy()
                    .to_string();
                let parent = path.parent().map(PathBuf::from).unwrap_or_default();
                let parent = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent
                };
                std::fs::create_dir_all(&parent).map_err(|source| IoError::File {
                    path: parent.clone(),
                    source,
                })?;
                let staging = parent.join(format!(".{name}.partial"));
                if staging.exists() {
                    std::fs::remove_dir_all(&staging).map_err(|source| IoError::File {
                        path: staging.clone(),
                        source,
                    })?;
                }
                std::fs::create_dir_all(&staging).map_err(|source| IoError::File {
                    path: staging.clone(),
                    source,
                })?;
                let store = Store::open(&Location::File(staging.clone()))?;
                let output = Output {
                    store,
                    target: target.clone(),
                    staging: Some((staging, path.clone())),
                    root: Default::default(),
                    provenance: Default::default(),
                    finished: false,
                    keep_unfinished: false,
                };
                Ok((output, false))
            }
            _ => {
                let store = Store::open(&target)?;
                let storage = store.storage();
                let existing =
                    storage
                        .list_prefix(&StorePrefix::root())
                        .map_err(|e| IoError::Store {
                            location: target.to_string(),
                            reason: format!("listing: {e}"),
                        })?;
                let unfinished = !existing.is_empty() && store.check_complete().is_err();
                let resumed = resume && unfinished;
                if !existing.is_empty() && !resumed {
                    if !overwrite {
                        return Err(IoError::Exists(target.to_string()));
                    }
                    storage
                        .erase_prefix(&StorePrefix::root())
                        .map_err(|e| IoError::Write {
                            location: target.to_string(),
                            what: "removal of the previous output".into(),
                            reason: e.to_string(),
                        })?;
                }
                let output = Output {
                    store,
                    target,
                    staging: None,
                    root: Default::default(),
                    provenance: Default::default(),
                    finished: false,
                    keep_unfinished: resume,
                };
                // Mark the output incomplete before anything else lands in it.
                output.write_group(serde_json::Map::new())?;
                Ok((output, resumed))
            }
        }
    }

    /// The store being written (for a filesystem output, the staging folder).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The final location.
    pub fn target(&self) -> &Location {
        &self.target
    }

    /// Writes the root group's metadata with `attributes`.
    pub fn write_group(
        &self,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), IoError> {
        let mut root = self
            .root
            .lock()
            .map_err(|_| IoError::Invalid("root attributes poisoned".into()))?;
        *root = attributes;
        let attrs = with_status(&root, "incomplete");
        drop(root);
        self.write_group_at("/", attrs)
    }

    /// Writes a group's metadata at `path` with `attributes`.
    pub fn write_group_at(
        &self,
        path: &str,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), IoError> {
        let path = format!("/{}", path.trim_matches('/'));
        let what = format!("group '{path}'");
        let group = GroupBuilder::new()
            .attributes(attributes)
            .build(self.store.storage().clone(), &path)
            .map_err(|e| self.write_err(&what, e.to_string()))?;
        group
            .store_metadata()
            .map_err(|e| self.write_err(&what, e.to_string()))
    }

    /// Writes a whole (small) n-dimensional array at `path`, zstd-compressed, in one chunk per
    /// `chunk_rows` along the first axis.
    pub fn write_array<T: Sample>(
        &self,
        path: &str,
        data: &ArrayD<T>,
        dimension_names: &[&str],
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), IoError> {
        let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        let mut chunks: Vec<u64> = shape.iter().map(|&n| n.max(1)).collect();
        if let Some(first) = chunks.first_mut() {
            // Keep chunks near 8 MiB so large ground-truth tables stay readable piecewise.
            let row_bytes: u64 =
                shape.iter().skip(1).product::<u64>().max(1) * T::DTYPE.size() as u64;
            *first = (*first).min((8 << 20) / row_bytes.max(1)).max(1);
        }
        let what = format!("array '{path}'");
        let array = ArrayBuilder::new(shape.clone(), chunks, T::DTYPE.name(), T::default())
            .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))])
            .dimension_names(Some(
                dimension_names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            ))
            .attributes(attributes)
            .build(
                self.store.storage().clone(),
                &format!("/{}", path.trim_matches('/')),
            )
            .map_err(|e| self.write_err(&what, e.to_string()))?;
        array
            .store_metadata()
            .map_err(|e| self.write_err(&what, e.to_string()))?;
        if data.is_empty() {
            return Ok(());
        }
        let contiguous = data.as_standard_layout().to_owned();
        let ranges: Vec<std::ops::Range<u64>> = shape.iter().map(|&n| 0..n).collect();
        array
            .store_array_subset(&ranges, &contiguous)
            .map_err(|e| self.write_err(&what, e.to_string()))
    }

    /// Writes sparse footprints as the group `group` holding `cell`, `pixel` and `weight` arrays (one
    /// entry per non-zero; `pixel = y * width + x`; cell ids are positions in `footprints`).
    pub fn write_footprints<'a>(
        &self,
        group: &str,
        width: usize,
        footprints: impl IntoIterator<Item = (&'a [u32], &'a [f32])>,
    ) -> Result<(), IoError> {
        let mut attrs = serde_json::Map::new();
        attrs.insert("pixel_index".into(), "y * width + x".into());
        attrs.insert("width".into(), width.into());
        self.write_group_at(group, attrs)?;
        let (mut cell, mut pixel, mut weight) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (p, w)) in footprints.into_iter().enumerate() {
            cell.extend(std::iter::repeat_n(i as u32, p.len()));
            pixel.extend_from_slice(p);
            weight.extend_from_slice(w);
        }
        let none = serde_json::Map::new;
        self.write_array(
            &format!("{group}/cell"),
            &ndarray::Array1::from(cell).into_dyn(),
            &["nnz"],
            none(),
        )?;
        self.write_array(
            &format!("{group}/pixel"),
            &ndarray::Array1::from(pixel).into_dyn(),
            &["nnz"],
            none(),
        )?;
        self.write_array(
            &format!("{group}/weight"),
            &ndarray::Array1::from(weight).into_dyn(),
            &["nnz"],
            none(),
        )
    }

    /// Reads back an array this output wrote, before it is finished (readers of the store
    /// refuse it until then).
    pub fn read_own_array<T: zarrs::array::ElementOwned>(
        &self,
        path: &str,
    ) -> Result<ndarray::ArrayD<T>, IoError> {
        self.store().read_array_unchecked(path)
    }

    /// Writes a raw key (a JSON sidecar) relative to the output root.
    pub fn write_file(&self, key: &str, bytes: Vec<u8>) -> Result<(), IoError> {
        self.store.set(key, bytes)
    }

    /// Where a file for `key` can be written on local disk: inside the output itself when it is
    /// a folder (its staging folder while it has one), else a scratch folder; pass the path to
    /// [`Output::put_file`] when the file is written.
    pub fn local_path(&self, key: &str) -> Result<PathBuf, IoError> {
        let key = key.trim_start_matches('/');
        if key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(IoError::Invalid(format!(
                "{key:?}: not a key inside the output"
            )));
        }
        let dir = match (&self.staging, &self.target) {
            (Some((staging, _)), _) => staging.clone(),
            (None, Location::File(path)) => path.clone(),
            (None, _) => std::env::temp_dir().join(format!("tessera-{}", std::process::id())),
        };
        let path = dir.join(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| IoError::File {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        Ok(path)
    }

    /// Stores the local file at `path` (from [`Output::local_path`]) as `key`: already in place
    /// for a folder output; uploaded and removed for an object store (read whole: the object
    /// store's client splits writes over 16 MiB into a multipart upload).
    pub fn put_file(&self, key: &str, path: &Path) -> Result<(), IoError> {
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IoError::File { path, source }
        };
        if matches!(self.target, Location::File(_)) {
            let at = self.local_path(key)?;
            if at != path {
                std::fs::copy(path, &at).map_err(file_err(&at))?;
                std::fs::remove_file(path).map_err(file_err(path))?;
            }
            return Ok(());
        }
        let bytes = std::fs::read(path).map_err(file_err(path))?;
        self.store.set(key.trim_start_matches('/'), bytes)?;
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    /// Sets the provenance record (how the output was made: tool, command, inputs with their
    /// manifests, times) that [`Output::finish`] writes, with the output's own manifest, under
    /// `provenance/` and as an RO-Crate (`ro-crate-metadata.json`), see [`crate::provenance`].
    pub fn set_provenance(&self, record: serde_json::Value) -> Result<(), IoError> {
        *self
            .provenance
            .lock()
            .map_err(|_| IoError::Invalid("provenance record poisoned".into()))? = Some(record);
        Ok(())
    }

    /// Makes the output visible at its final location. Call once everything is written. With a
    /// provenance record set, the output's manifest (SHA-256 of every stored object) is computed
    /// after the status flips to complete and written with the record before the output appears
    /// at its final location (on object stores, the record lands just after the status).
    pub fn finish(mut self) -> Result<Location, IoError> {
        // The root's status flips last: readers of object stores see `complete` only now.
        let attrs = {
            let root = self
                .root
                .lock()
                .map_err(|_| IoError::Invalid("root attributes poisoned".into()))?;
            with_status(&root, STATUS_COMPLETE)
        };
        self.write_group_at("/", attrs)?;
        let record = self
            .provenance
            .lock()
            .map_err(|_| IoError::Invalid("provenance record poisoned".into()))?
            .take();
        if let Some(record) = record {
            let written = match &self.staging {
                Some((staging, _)) => Location::File(staging.clone()),
                None => self.target.clone(),
            };
            for (key, bytes) in crate::provenance::finish_record(record, &written, &self.target)? {
                self.store.set(&key, bytes)?;
            }
        }
        if let Some((staging, path)) = &self.staging {
            // Swap in the new output without a moment where neither exists: move the old one
            // aside, rename the staging folder into place, then delete the old one (restoring it
            // if the rename fails).
            let file_err = |p: &PathBuf| {
                let p = p.clone();
                move |source| IoError::File { path: p, source }
            };
            let aside = path.with_file_name(format!(
                ".{}.old",
                path.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ));
            let had_old = path.exists();
            if had_old {
                if aside.exists() {
                    std::fs::remove_dir_all(&aside).map_err(file_err(&aside))?;
                }
                std::fs::rename(path, &aside).map_err(file_err(path))?;
            }
            if let Err(e) = std::fs::rename(staging, path) {
                if had_old {
                    let _ = std::fs::rename(&aside, path);
                }
                return Err(IoError::File {
                    path: path.clone(),
                    source: e,
                });
            }
            if had_old {
                if aside.is_dir() {
                    std::fs::remove_dir_all(&aside).map_err(file_err(&aside))?;
                } else {
                    std::fs::remove_file(&aside).map_err(file_err(&aside))?;
                }
            }
        }
        self.finished = true;
        Ok(self.target.clone())
    }

    fn write_err(&self, what: &str, reason: String) -> IoError {
        IoError::Write {
            location: self.target.to_string(),
            what: what.to_string(),
            reason,
        }
    }
}

/// `attributes` with `tessera.status` set to `status` (the `tessera` attribute created if needed).
fn with_status(
    attributes: &serde_json::Map<String, serde_json::Value>,
    status: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = attributes.clone();
    let entry = out
        .entry(META_ATTRIBUTE.to_string())
        .or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    if let Some(obj) = entry.as_object_mut() {
        obj.insert("status".into(), status.into());
    }
    out
}

/// Writes the frames of one recording in order, buffering one chunk-row of frames at a time so that
/// every store is chunk-aligned (no read-modify-write).
pub struct RecordingWriter<T: Sample> {
    array: DynArray,
    location: String,
    shape: Shape3,
    chunk_t: usize,
    next_t: u64,
    pending: Vec<Array3<T>>,
    pending_frames: usize,
    meta: RecordingMeta,
}

impl<T: Sample> std::fmt::Debug for RecordingWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("location", &self.location)
            .field("shape", &self.shape)
            .field("next_t", &self.next_t)
            .finish()
    }
}

fn tessera_attribute(meta: &RecordingMeta, status: &str) -> serde_json::Value {
    json!({
        "status": status,
        "writer": format!("tessera {}", env!("CARGO_PKG_VERSION")),
        "recording": meta,
    })
}

impl<T: Sample> RecordingWriter<T> {
    /// Creates the recording array in `output` (metadata marked incomplete).
    pub fn create(output: &Output, shape: Shape3, options: &WriteOptions) -> Result<Self, IoError> {
        let location = output.target().to_string();
        let chunks = [
            options.chunks[0].clamp(1, shape.t),
            options.chunks[1].clamp(1, shape.y),
            options.chunks[2].clamp(1, shape.x),
        ];
        if options.chunks.contains(&0) {
            return Err(IoError::Invalid(format!(
                "chunk shape {:?} has a zero extent",
                options.chunks
            )));
        }
        let mut attributes = serde_json::Map::new();
        attributes.insert(
            META_ATTRIBUTE.into(),
            tessera_attribute(&options.meta, "incomplete"),
        );
        let path = format!("/{}", options.array_path.trim_matches('/'));
        let array = ArrayBuilder::new(
            shape.to_array().to_vec(),
            chunks.to_vec(),
            T::DTYPE.name(),
            T::default(),
        )
        .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(options.zstd_level, false))])
        .dimension_names(Some(["t", "y", "x"]))
        .attributes(attributes)
        .build(output.store().storage().clone(), &path)
        .map_err(|e| IoError::Write {
            location: location.clone(),
            what: format!("array '{path}'"),
            reason: e.to_string(),
        })?;
        array.store_metadata().map_err(|e| IoError::Write {
            location: location.clone(),
            what: format!("array '{path}'"),
            reason: e.to_string(),
        })?;
        Ok(RecordingWriter {
            array,
            location,
            shape,
            chunk_t: chunks[0] as usize,
            next_t: 0,
            pending: Vec::new(),
            pending_frames: 0,
            meta: options.meta.clone(),
        })
    }

    /// Frames written (or buffered) so far.
    pub fn frames_written(&self) -> u64 {
        self.next_t + self.pending_frames as u64
    }

    /// Appends frames `(n, y, x)` after those already written.
    pub fn append(&mut self, frames: ArrayView3<T>) -> Result<(), IoError> {
        let (n, h, w) = frames.dim();
        if (h as u64, w as u64) != (self.shape.y, self.shape.x) {
            return Err(IoError::Invalid(format!(
                "frames of {h}x{w} pixels cannot be appended to a recording of {}x{}",
                self.shape.y, self.shape.x
            )));
        }
        if self.frames_written() + n as u64 > self.shape.t {
            return Err(IoError::Invalid(format!(
                "appending {n} frames after {} overflows the recording's {} frames",
                self.frames_written(),
                self.shape.t
            )));
        }
        let mut rest = frames;
        while rest.len_of(Axis(0)) > 0 {
            let take = (self.chunk_t - self.pending_frames).min(rest.len_of(Axis(0)));
            let (head, tail) = rest.split_at(Axis(0), take);
            rest = tail;
            if self.pending_frames == 0 && take == self.chunk_t {
                // A whole chunk row: stored from the caller's frames, no copy held.
                self.store(head)?;
                continue;
            }
            self.pending.push(head.to_owned());
            self.pending_frames += take;
            if self.pending_frames == self.chunk_t {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if self.pending_frames == 0 {
            return Ok(());
        }
        let views: Vec<_> = self.pending.iter().map(|a| a.view()).collect();
        let block = concatenate(Axis(0), &views).map_err(|e| IoError::Invalid(e.to_string()))?;
        self.store(block.view())?;
        self.pending.clear();
        self.pending_frames = 0;
        Ok(())
    }

    /// Writes `block` as the frames after those written so far.
    fn store(&mut self, block: ArrayView3<T>) -> Result<(), IoError> {
        let t0 = self.next_t;
        let t1 = t0 + block.len_of(Axis(0)) as u64;
        self.array
            .store_array_subset(&[t0..t1, 0..self.shape.y, 0..self.shape.x], &block)
            .map_err(|e| IoError::Write {
                location: self.location.clone(),
                what: format!("frames {t0}..{t1}"),
                reason: e.to_string(),
            })?;
        self.next_t = t1;
        Ok(())
    }

    /// Flushes the last frames and marks the array complete. Fails unless every frame was written.
    pub fn finish(mut self) -> Result<(), IoError> {
        self.flush()?;
        if self.next_t != self.shape.t {
            return Err(IoError::Invalid(format!(
                "recording {} expects {} frames, only {} were written",
                self.location, self.shape.t, self.next_t
            )));
        }
        self.array.attributes_mut().insert(
            META_ATTRIBUTE.into(),
            tessera_attribute(&self.meta, STATUS_COMPLETE),
        );
        self.array.store_metadata().map_err(|e| IoError::Write {
            location: self.location.clone(),
            what: "final metadata".into(),
            reason: e.to_string(),
        })
    }
}

impl Drop for Output {
    /// An output dropped before [`Output::finish`] (a failed write) removes its staging folder, so
    /// nothing half-written stays behind; object-store outputs keep their `incomplete` status.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.keep_unfinished {
            tracing::warn!(output = %self.target, "output not finished: left in place, marked incomplete, for a rerun to resume");
            return;
        }
        if let Some((staging, _)) = &self.staging {
            if let Err(e) = std::fs::remove_dir_all(staging) {
                tracing::warn!(staging = %staging.display(), cause = %e, "cannot remove staging folder");
            }
        } else {
            tracing::warn!(output = %self.target, "output not finished: left marked incomplete");
        }
    }
}
