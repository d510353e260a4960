//! TIFF sources: one multi-page TIFF or BigTIFF (ScanImage, ImageJ, tifffile), or a folder of
//! single-frame TIFFs (the neurofinder layout), read frame by frame.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tessera_core::{Dtype, RecordingMeta, Shape3};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;

use crate::IoError;

/// A TIFF recording on disk: its files, page counts, frame geometry and the metadata found in it.
#[derive(Debug, Clone)]
pub struct TiffSource {
    path: PathBuf,
    /// (file, number of pages), in frame order.
    files: Vec<(PathBuf, usize)>,
    shape: Shape3,
    dtype: Dtype,
    found: RecordingMeta,
}

fn tiff_err(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Tiff {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn open_decoder(path: &Path) -> Result<Decoder<BufReader<File>>, IoError> {
    let f = File::open(path).map_err(|source| IoError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Decoder::new(BufReader::new(f))
        .map(|d| d.with_limits(Limits::unlimited()))
        .map_err(|e| tiff_err(path, format!("not a readable TIFF: {e}")))
}

/// Counts pages by walking the IFD chain without decoding pixels.
fn count_pages(dec: &mut Decoder<BufReader<File>>, path: &Path) -> Result<usize, IoError> {
    let mut n = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut ptr = dec.ifd_pointer();
    while let Some(p) = ptr {
        if !seen.insert(p.0) {
            return Err(tiff_err(
                path,
                format!(
                    "page {n}: the page chain loops back to an earlier page (corrupt IFD offsets)"
                ),
            ));
        }
        let dir = dec
            .read_directory(p)
            .map_err(|e| tiff_err(path, format!("page {n}: {e}")))?;
        n += 1;
        ptr = dir.next();
    }
    Ok(n)
}

/// Width, height and sample type of the decoder's current page.
fn page_geometry(
    dec: &mut Decoder<BufReader<File>>,
    path: &Path,
    page: usize,
) -> Result<(u32, u32, Dtype), IoError> {
    let at = |e: tiff::TiffError| tiff_err(path, format!("page {page}: {e}"));
    let (w, h) = dec.dimensions().map_err(at)?;
    let colortype = dec.colortype().map_err(at)?;
    if colortype.num_samples() != 1 {
        return Err(tiff_err(
            path,
            format!(
                "page {page}: {colortype:?} has {} samples per pixel; a recording needs grayscale pages",
                colortype.num_samples()
            ),
        ));
    }
    let layout = dec.image_buffer_layout().map_err(at)?;
    use tiff::decoder::DecodingSampleType as S;
    let dtype = match layout.sample_type {
        Some(S::U8) => Dtype::Uint8,
        Some(S::U16) => Dtype::Uint16,
        Some(S::U32) => Dtype::Uint32,
        Some(S::U64) => Dtype::Uint64,
        Some(S::I8) => Dtype::Int8,
        Some(S::I16) => Dtype::Int16,
        Some(S::I32) => Dtype::Int32,
        Some(S::I64) => Dtype::Int64,
        Some(S::F32) => Dtype::Float32,
        Some(S::F64) => Dtype::Float64,
        other => {
            return Err(tiff_err(
                path,
                format!("page {page}: unsupported sample type {other:?}"),
            ));
        }
    };
    Ok((w, h, dtype))
}

impl TiffSource {
    /// Opens a multi-page TIFF file, or a folder whose `.tif`/`.tiff` files are frames (or runs of
    /// frames) in name order. Checks that it holds at least one page; page geometry is checked
    /// against the first page as frames are read.
    pub fn open(path: &Path) -> Result<TiffSource, IoError> {
        let meta = std::fs::metadata(path).map_err(|source| IoError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let paths: Vec<PathBuf> = if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| IoError::File {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .map(|e| {
                                e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff")
                            })
                            .unwrap_or(false)
                })
                .collect();
            v.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
            if v.is_empty() {
                return Err(tiff_err(path, "folder holds no .tif or .tiff files"));
            }
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut dec = open_decoder(&paths[0])?;
        let (w, h, dtype) = page_geometry(&mut dec, &paths[0], 0)?;
        let mut found = scan_metadata(&mut dec, w);
        let mut files = Vec::with_capacity(paths.len());
        let mut total = 0usize;
        for (i, p) in paths.into_iter().enumerate() {
            let n = if i == 0 {
                count_pages(&mut dec, &p)?
            } else {
                count_pages(&mut open_decoder(&p)?, &p)?
            };
            total += n;
            files.push((p, n));
        }
        // ImageJ writes stacks over 4 GB as one page followed by raw frames; tessera reads pages.
        if let Some(images) = found
            .acquisition
            .get("imagej_images")
            .and_then(serde_json::Value::as_u64)
            && files.len() == 1
            && images as usize > total
        {
            return Err(tiff_err(
                &files[0].0,
                format!(
                    "ImageJ header announces {images} frames but the file has {total} page(s): a raw ImageJ stack (over 4 GB) is not supported; re-save it as BigTIFF"
                ),
            ));
        }
        if meta.is_dir() {
            merge_info_json(path, &mut found);
        }
        if let Some(r) = found.frame_rate_hz
            && !(r.is_finite() && r > 0.0)
        {
            found.frame_rate_hz = None;
        }
        found.source = Some(path.display().to_string());
        let shape = Shape3::new(total as u64, u64::from(h), u64::from(w))?;
        Ok(TiffSource {
            path: path.to_path_buf(),
            files,
            shape,
            dtype,
            found,
        })
    }

    /// The source path (file or folder).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (frames, height, width).
    pub fn shape(&self) -> Shape3 {
        self.shape
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Number of files the frames come from.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Metadata found in the source (ScanImage/ImageJ headers, a neurofinder `info.json`).
    pub fn found_meta(&self) -> &RecordingMeta {
        &self.found
    }

    /// Iterates frames in order, each checked against the first page's geometry and type.
    pub fn frames(&self) -> FrameIter<'_> {
        FrameIter {
            source: self,
            file: 0,
            page: 0,
            frame: 0,
            decoder: None,
        }
    }
}

/// Sequential frame reader over a [`TiffSource`].
pub struct FrameIter<'a> {
    source: &'a TiffSource,
    file: usize,
    page: usize,
    frame: u64,
    decoder: Option<Decoder<BufReader<File>>>,
}

impl std::fmt::Debug for FrameIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameIter")
            .field("frame", &self.frame)
            .finish()
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<DecodingResult, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (path, pages) = self.source.files.get(self.file)?;
            if self.page >= *pages {
                self.file += 1;
                self.page = 0;
                self.decoder = None;
                continue;
            }
            let result = self.read_page(path);
            self.page += 1;
            self.frame += 1;
            if result.is_err() {
                // Stop after an error: the caller reports it; frames after it are not read.
                self.file = self.source.files.len();
            }
            return Some(result);
        }
    }
}

impl FrameIter<'_> {
    fn read_page(&mut self, path: &Path) -> Result<DecodingResult, IoError> {
        let page = self.page;
        if self.decoder.is_none() {
            self.decoder = Some(open_decoder(path)?);
        }
        let Some(dec) = self.decoder.as_mut() else {
            return Err(tiff_err(path, "decoder unavailable"));
        };
        if page > 0 {
            dec.next_image()
                .map_err(|e| tiff_err(path, format!("page {page}: {e}")))?;
        }
        let (w, h, dtype) = page_geometry(dec, path, page)?;
        let s = self.source;
        if (u64::from(h), u64::from(w)) != (s.shape.y, s.shape.x) || dtype != s.dtype {
            return Err(tiff_err(
                path,
                format!(
                    "page {page} (frame {}) is {h}x{w} {dtype}, but the recording's first page is {}x{} {}: pages are inconsistent",
                    self.frame, s.shape.y, s.shape.x, s.dtype
                ),
            ));
        }
        dec.read_image()
            .map_err(|e| tiff_err(path, format!("page {page} (frame {}): {e}", self.frame)))
    }
}

/// Orders names so that `image2.tif` comes before `image10.tif`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = ai.peek().copied().filter(char::is_ascii_digit) {
                    na.push(c);
                    ai.next();
                }
                let mut nb = String::new();
                while let Some(c) = bi.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(c);
                    bi.next();
                }
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| na.len().cmp(&nb.len()));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                ai.next();
                bi.next();
            }
        }
    }
}

/// Looks for frame rate and pixel size in the first page's headers:
/// - ScanImage 2016+: `SI.hRoiManager.scanFrameRate = 30.0` (Software or ImageDescription tag);
/// - ScanImage 3-5: `state.acq.frameRate=...`;
/// - ImageJ: `finterval=` (seconds per frame) and `unit=micron` with XResolution (pixels per unit).
fn scan_metadata(dec: &mut Decoder<BufReader<File>>, _width: u32) -> RecordingMeta {
    let mut meta = RecordingMeta::default();
    let mut text = String::new();
    for tag in [Tag::ImageDescription, Tag::Software] {
        if let Ok(Some(v)) = dec.find_tag(tag)
            && let Ok(s) = v.into_string()
        {
            text.push_str(&s);
            text.push('\n');
        }
    }
    let value_of = |key: &str| -> Option<f64> {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key)
                .then(|| v.trim().trim_matches(['\'', '"', ';']).parse::<f64>().ok())?
        })
    };
    let rate = value_of("SI.hRoiManager.scanFrameRate")
        .or_else(|| value_of("scanimage.SI.hRoiManager.scanFrameRate"))
        .or_else(|| value_of("state.acq.frameRate"))
        .or_else(|| value_of("finterval").filter(|&f| f > 0.0).map(|f| 1.0 / f));
    if let Some(r) = rate.filter(|r| r.is_finite() && *r > 0.0) {
        meta.frame_rate_hz = Some(r);
        meta.acquisition
            .insert("frame_rate_source".into(), "tiff header".into());
    }
    let imagej_micron = text.lines().any(|l| {
        matches!(
            l.trim(),
            "unit=micron" | "unit=um" | "unit=\\u00B5m" | "unit=µm"
        )
    });
    if imagej_micron
        && let Ok(Some(tiff::decoder::ifd::Value::Rational(n, d))) = dec.find_tag(Tag::XResolution)
        && n > 0
        && d > 0
    {
        meta.pixel_size_um = Some(f64::from(d) / f64::from(n));
    }
    if let Some(n) = value_of("images") {
        meta.acquisition
            .insert("imagej_images".into(), (n as u64).into());
    }
    if text.contains("SI.VERSION") || text.contains("scanimage") || text.contains("state.acq") {
        meta.acquisition
            .insert("acquisition_software".into(), "ScanImage".into());
    }
    meta
}

/// Reads a neurofinder-style `info.json` next to (or one level above) a folder of frames.
fn merge_info_json(folder: &Path, meta: &mut RecordingMeta) {
    let candidates = [
        folder.join("info.json"),
        folder.join("..").join("info.json"),
    ];
    let Some(text) = candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
    else {
        return;
    };
    let Ok(info) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    if meta.frame_rate_hz.is_none() {
        meta.frame_rate_hz = info
            .get("rate-hz")
            .and_then(serde_json::Value::as_f64)
            .filter(|r| r.is_finite() && *r > 0.0);
    }
    if meta.pixel_size_um.is_none() {
        meta.pixel_size_um = info
            .get("pixels-per-micron")
            .and_then(serde_json::Value::as_f64)
            .filter(|&p| p > 0.0)
            .map(|p| 1.0 / p);
    }
    if meta.indicator.is_none() {
        meta.indicator = info
            .get("indicator")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
    }
    for key in ["id", "lab", "region", "method", "depth-microns"] {
        if let Some(v) = info.get(key) {
            meta.acquisition.insert(key.to_string(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["im10.tif", "im2.tif", "im1.tif", "im02.tif"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["im1.tif", "im2.tif", "im02.tif", "im10.tif"]);
    }
}
