//! NWB export: a finished run's results as one NWB 2 file (HDF5), the format DANDI archives and
//! pynwb, Suite2p's and CaImAn's readers and the NWB widgets open.
//!
//! ```text
//! /                                    NWBFile: identifier, session_description, session_start_time,
//!                                      timestamps_reference_time, file_create_date (the run's end)
//! /general/devices/<device>            Device
//! /general/optophysiology/ImagingPlane ImagingPlane (rate, indicator, location, excitation
//!                                      wavelength, pixel size as grid_spacing) + OpticalChannel
//! /general/subject                     Subject (id, species, sex, age), when given
//! /general/source_script               the run's provenance record (JSON), file_name "tessera"
//! /general/experimenter, lab, institution
//! /processing/ophys                    ProcessingModule; its description names the tool, version,
//!                                      run and workflow hash
//!   ImageSegmentation/PlaneSegmentation  pixel_mask (x, y, weight) per ROI with pixel_mask_index,
//!                                      and columns accepted, snr, r_value
//!   Fluorescence/RoiResponseSeries     F: each ROI's trace plus the background under it (time x ROI)
//!   Fluorescence/Deconvolved           OASIS spike amplitudes (time x ROI)
//!   DfOverF/RoiResponseSeries          dF/F (time x ROI)
//!   SummaryImages                      Images: mean, correlation, pnr (GrayscaleImage)
//!   RegistrationShifts                 TimeSeries (time x 2: dy, dx, pixels), when registered
//! ```
//!
//! Every typed object carries `neurodata_type`, `namespace` and an `object_id`; object ids are
//! derived from the file's identifier and the object's path, so the same run exports to the same
//! ids. The file is written under a hidden `.NAME.partial` name beside the target and renamed when
//! complete: an interrupted export never leaves a file that looks whole. A run that is not
//! complete is refused before anything is written.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location as H5Location, ObjectReference1};
use hdf5_metno as hdf5;
use ndarray::{Array1, Array2, ArrayView, Dimension, Ix2};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_core::{Box3, Dtype};
use tessera_io::{IoError, Location, RunRoot, RunSource, Store};

/// The NWB schema version the files follow.
pub const NWB_VERSION: &str = "2.8.0";

/// What can go wrong exporting.
#[derive(Debug, thiserror::Error)]
pub enum NwbError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: HDF5: {reason}")]
    Hdf5 { path: String, reason: String },
    #[error("{run}: {reason}; nothing was written")]
    NotExportable { run: String, reason: String },
    #[error("{0} exists: give --overwrite to replace it")]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

pub use tessera_core::session::{RawData, Session, Subject};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub identifier: String,
    pub rois: usize,
    pub frames: usize,
}

/// A run's results, read and checked.
struct Results {
    frames: usize,
    width: usize,
    rate: f64,
    cell: Vec<u32>,
    pixel: Vec<u32>,
    weight: Vec<f32>,
    fluorescence: Array2<f32>,
    dff: Array2<f32>,
    spikes: Array2<f32>,
    accepted: Vec<u8>,
    snr: Vec<f64>,
    r_value: Vec<f64>,
    images: Vec<(&'static str, Array2<f32>)>,
    shifts: Option<Array2<f32>>,
    record: String,
    finished_at: String,
    tool: String,
    run_id: String,
    workflow_sha256: String,
    input_digest: String,
    input: String,
    input_array: Option<String>,
}

fn not_exportable(run: &str, reason: impl Into<String>) -> NwbError {
    NwbError::NotExportable {
        run: run.to_string(),
        reason: reason.into(),
    }
}

/// Reads the run's results from `store` (named `run` in messages). With `record` (the run's
/// provenance record, given by the publish task before it marks the run complete) the run need not
/// be complete yet; without it, it must be.
fn read_results<S: RunSource>(
    store: &S,
    run: &str,
    record: Option<&Value>,
) -> Result<Results, NwbError> {
    let attrs = store.root_attributes()?;
    let root = match record {
        Some(_) => RunRoot::from_attributes(&attrs),
        None => RunRoot::finished(&attrs),
    }
    .map_err(|reason| not_exportable(run, reason))?;
    let (frames, height, width) = (root.frames, root.height, root.width);
    let rate = root.frame_rate_hz;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(not_exportable(
            run,
            "no positive frame rate in the run's root attributes",
        ));
    }
    let meta = root.meta;
    let vec1 = |path: &str| -> Result<Vec<u32>, NwbError> {
        Ok(store.array::<u32>(path)?.into_iter().collect())
    };
    let cell = vec1("rois/footprints/cell")?;
    let pixel = vec1("rois/footprints/pixel")?;
    let weight: Vec<f32> = store
        .array::<f32>("rois/footprints/weight")?
        .into_iter()
        .collect();
    let table = |path: &str| -> Result<Array2<f32>, NwbError> {
        store
            .array::<f32>(path)?
            .into_dimensionality::<Ix2>()
            .map_err(|_| NwbError::Invalid(format!("{run}: {path} is not (cell, t)")))
    };
    let fluorescence = table("rois/fluorescence")?;
    let dff = table("rois/dff")?;
    let spikes = table("rois/spikes")?;
    let accepted: Vec<u8> = store.array::<u8>("rois/accepted")?.into_iter().collect();
    let k = fluorescence.nrows();
    for (name, a) in [
        ("rois/dff", &dff),
        ("rois/spikes", &spikes),
        ("rois/fluorescence", &fluorescence),
    ] {
        if a.dim() != (k, frames) {
            return Err(NwbError::Invalid(format!(
                "{run}: {name} is {:?}, expected ({k}, {frames})",
                a.dim()
            )));
        }
    }
    if accepted.len() != k || cell.len() != pixel.len() || cell.len() != weight.len() {
        return Err(NwbError::Invalid(format!(
            "{run}: rois/accepted or rois/footprints do not match the {k} ROIs"
        )));
    }
    if let Some((i, _)) = cell
        .iter()
        .zip(&pixel)
        .enumerate()
        .find(|(_, (c, p))| **c as usize >= k || **p as usize >= height * width)
    {
        return Err(NwbError::Invalid(format!(
            "{run}: rois/footprints entry {i} is outside the {k} ROIs or the {height}x{width} field"
        )));
    }
    let qc: Vec<Value> = match store.bytes("rois/qc.json")? {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| NwbError::Invalid(format!("{run}: rois/qc.json: {e}")))?,
        None => Vec::new(),
    };
    let column = |name: &str| -> Vec<f64> {
        (0..k)
            .map(|i| qc.get(i).and_then(|q| q[name].as_f64()).unwrap_or(f64::NAN))
            .collect()
    };
    let mut images = Vec::new();
    for name in ["mean", "correlation", "pnr"] {
        let path = format!("summary/{name}");
        if store.bytes(&format!("{path}/zarr.json"))?.is_some() {
            images.push((name, table(&path)?));
        }
    }
    let shifts = if store.bytes("registration/shifts/zarr.json")?.is_some() {
        Some(table("registration/shifts")?)
    } else {
        None
    };
    let (record, record_text) = match record {
        Some(r) => (
            r.clone(),
            serde_json::to_string_pretty(r).unwrap_or_default(),
        ),
        None => {
            let bytes = store
                .bytes("provenance/record.json")?
                .ok_or_else(|| not_exportable(run, "no provenance record"))?;
            let record: Value = serde_json::from_slice(&bytes)
                .map_err(|e| NwbError::Invalid(format!("{run}: provenance/record.json: {e}")))?;
            (record, String::from_utf8_lossy(&bytes).to_string())
        }
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    Ok(Results {
        frames,
        width,
        rate,
        snr: column("snr"),
        r_value: column("r_value"),
        cell,
        pixel,
        weight,
        fluorescence,
        dff,
        spikes,
        accepted,
        images,
        shifts,
        record: record_text,
        finished_at: text(&record["finished_at"]),
        tool: format!(
            "{} {} ({})",
            text(&record["tool"]["name"]),
            text(&record["tool"]["version"]),
            text(&record["tool"]["git_commit"])
        ),
        run_id: text(&record["run_id"]),
        workflow_sha256: text(&meta["workflow_sha256"]),
        input_digest: text(&meta["input_digest"]),
        input: text(&meta["input"]),
        input_array: meta["input_array"].as_str().map(str::to_string),
    })
}

/// Exports the finished run at `run` (a path or URI) to the NWB file `out`.
pub fn export(
    run: &str,
    out: &Path,
    session: &Session,
    overwrite: bool,
) -> Result<Exported, NwbError> {
    check(out, session, overwrite)?;
    let store = Store::open(&Location::parse(run)?)?;
    export_from(&store, run, None, out, session, overwrite)
}

/// Refuses an existing `out` (without `overwrite`) and a session that cannot be written.
fn check(out: &Path, session: &Session, overwrite: bool) -> Result<(), NwbError> {
    if out.exists() && !overwrite {
        return Err(NwbError::Exists(out.to_path_buf()));
    }
    let problems = session.check();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|(f, e)| format!("{f}: {e}")).collect();
        return Err(NwbError::Invalid(format!(
            "the session metadata: {}",
            list.join("; ")
        )));
    }
    Ok(())
}

/// Exports the run in `store` (named `run` in messages) to the NWB file `out`. `record` is the
/// run's provenance record when the store does not hold it yet: the publish task exports before it
/// marks the run complete; without it the run must be complete.
pub fn export_from<S: RunSource>(
    store: &S,
    run: &str,
    record: Option<&Value>,
    out: &Path,
    session: &Session,
    overwrite: bool,
) -> Result<Exported, NwbError> {
    check(out, session, overwrite)?;
    let results = read_results(store, run, record)?;
    let identifier = session.identifier.clone().unwrap_or_else(|| {
        let h = Sha256::digest(format!(
            "{}|{}",
            results.input_digest, results.workflow_sha256
        ));
        format!("tessera-{}", hex(&h[..12]))
    });
    let name = out
        .file_name()
        .ok_or_else(|| NwbError::Invalid(format!("{}: not a file name", out.display())))?;
    let partial = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_file(&partial);
    let h5 = |e: hdf5::Error| NwbError::Hdf5 {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    let written = (|| {
        let file = hdf5::File::create(&partial)?;
        let w = Writer {
            seed: identifier.clone(),
        };
        w.write(&file, &results, session, &identifier)?;
        file.flush()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(h5(e));
    }
    std::fs::rename(&partial, out).map_err(|e| {
        NwbError::Invalid(format!(
            "cannot move {} to {}: {e}",
            partial.display(),
            out.display()
        ))
    })?;
    Ok(Exported {
        path: out.to_path_buf(),
        identifier,
        rois: results.fluorescence.nrows(),
        frames: results.frames,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn vstr(v: &str) -> hdf5::Result<VarLenUnicode> {
    v.replace('\0', " ")
        .parse::<VarLenUnicode>()
        .map_err(|e| hdf5::Error::from(e.to_string()))
}

fn attr_str(loc: &H5Location, name: &str, v: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vstr(v)?)
}

fn attr_strs(loc: &H5Location, name: &str, v: &[&str]) -> hdf5::Result<()> {
    let values = v
        .iter()
        .map(|s| vstr(s))
        .collect::<hdf5::Result<Vec<_>>>()?;
    loc.new_attr::<VarLenUnicode>()
        .shape(values.len())
        .create(name)?
        .write_raw(&values)
}

fn attr_num<T: H5Type>(loc: &H5Location, name: &str, v: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&v)
}

fn ds_str(g: &Group, name: &str, v: &str) -> hdf5::Result<hdf5::Dataset> {
    let d = g.new_dataset::<VarLenUnicode>().create(name)?;
    d.write_scalar(&vstr(v)?)?;
    Ok(d)
}

fn ds_strs(g: &Group, name: &str, v: &[&str]) -> hdf5::Result<hdf5::Dataset> {
    let values = v
        .iter()
        .map(|s| vstr(s))
        .collect::<hdf5::Result<Vec<_>>>()?;
    let d = g
        .new_dataset::<VarLenUnicode>()
        .shape(values.len())
        .create(name)?;
    d.write_raw(&values)?;
    Ok(d)
}

fn ds_num<T: H5Type>(g: &Group, name: &str, v: T) -> hdf5::Result<hdf5::Dataset> {
    let d = g.new_dataset::<T>().create(name)?;
    d.write_scalar(&v)?;
    Ok(d)
}

/// A dataset compressed with gzip in chunks of at most about 1 MiB along the first axis.
fn ds_array<T: H5Type, D: Dimension>(
    g: &Group,
    name: &str,
    a: ArrayView<'_, T, D>,
) -> hdf5::Result<hdf5::Dataset> {
    let shape = a.shape().to_vec();
    if a.is_empty() {
        return g.new_dataset_builder().with_data(a).create(name);
    }
    let row: usize = shape[1..].iter().product::<usize>() * std::mem::size_of::<T>();
    let mut chunk = shape.clone();
    chunk[0] = (1usize << 20).div_ceil(row.max(1)).clamp(1, shape[0]);
    g.new_dataset_builder()
        .with_data(a)
        .chunk(chunk)
        .deflate(4)
        .create(name)
}

/// The x, y and weight of one footprint pixel, as NWB's `pixel_mask` compound.
#[derive(hdf5::H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct PixelMask {
    x: u32,
    y: u32,
    weight: f32,
}

struct Writer {
    seed: String,
}

impl Writer {
    /// A UUID (version 4 layout) derived from the file's identifier and the object's path.
    fn object_id(&self, path: &str) -> String {
        let h = Sha256::digest(format!("{}|{path}", self.seed));
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..]
        )
    }

    fn typed(&self, loc: &H5Location, path: &str, ty: &str, ns: &str) -> hdf5::Result<()> {
        attr_str(loc, "namespace", ns)?;
        attr_str(loc, "neurodata_type", ty)?;
        attr_str(loc, "object_id", &self.object_id(path))
    }

    fn group(&self, parent: &Group, name: &str, ty: &str, path: &str) -> hdf5::Result<Group> {
        let g = parent.create_group(name)?;
        self.typed(&g, path, ty, "core")?;
        Ok(g)
    }

    fn write(
        &self,
        file: &hdf5::File,
        r: &Results,
        s: &Session,
        identifier: &str,
    ) -> hdf5::Result<()> {
        let root: &Group = file;
        self.typed(root, "/", "NWBFile", "core")?;
        attr_str(root, "nwb_version", NWB_VERSION)?;
        let created = if r.finished_at.is_empty() {
            s.session_start_time.as_str()
        } else {
            r.finished_at.as_str()
        };
        ds_strs(root, "file_create_date", &[created])?;
        ds_str(root, "identifier", identifier)?;
        ds_str(root, "session_description", &s.session_description)?;
        ds_str(root, "session_start_time", &s.session_start_time)?;
        ds_str(root, "timestamps_reference_time", &s.session_start_time)?;
        for g in ["acquisition", "analysis", "processing", "stimulus"] {
            root.create_group(g)?;
        }
        file.group("stimulus")?.create_group("presentation")?;
        file.group("stimulus")?.create_group("templates")?;

        // /general
        let general = root.create_group("general")?;
        if !s.experimenter.is_empty() {
            let names: Vec<&str> = s.experimenter.iter().map(String::as_str).collect();
            ds_strs(&general, "experimenter", &names)?;
        }
        ds_str(
            &general,
            "experiment_description",
            "Calcium imaging; ROIs, traces and spike inference by tessera (registration, detection, CNMF demixing, QC, OASIS)",
        )?;
        ds_strs(
            &general,
            "keywords",
            &["calcium imaging", "ophys", "tessera"],
        )?;
        if let Some(lab) = &s.lab {
            ds_str(&general, "lab", lab)?;
        }
        if let Some(institution) = &s.institution {
            ds_str(&general, "institution", institution)?;
        }
        let script = ds_str(&general, "source_script", &r.record)?;
        attr_str(
            &script,
            "file_name",
            "tessera run provenance record (provenance/record.json)",
        )?;
        if let Some(subject) = &s.subject {
            let g = self.group(&general, "subject", "Subject", "/general/subject")?;
            ds_str(
                &g,
                "description",
                &format!("subject {}", subject.subject_id),
            )?;
            ds_str(&g, "subject_id", &subject.subject_id)?;
            ds_str(&g, "species", &subject.species)?;
            ds_str(&g, "sex", &subject.sex)?;
            let age = ds_str(&g, "age", &subject.age)?;
            attr_str(&age, "reference", "birth")?;
        }
        let devices = general.create_group("devices")?;
        let device_path = format!("/general/devices/{}", s.device);
        let device = self.group(&devices, &s.device, "Device", &device_path)?;
        attr_str(
            &device,
            "description",
            "the microscope that recorded the movie",
        )?;
        let ophys = general.create_group("optophysiology")?;
        let plane_path = "/general/optophysiology/ImagingPlane";
        let plane = self.group(&ophys, "ImagingPlane", "ImagingPlane", plane_path)?;
        ds_str(
            &plane,
            "description",
            "the imaging plane of the recording tessera analysed",
        )?;
        ds_num(&plane, "excitation_lambda", s.excitation_lambda_nm)?;
        ds_num(&plane, "imaging_rate", r.rate as f32)?;
        ds_str(&plane, "indicator", &s.indicator)?;
        ds_str(&plane, "location", &s.location)?;
        if let Some(px) = s.pixel_size_um {
            let spacing = ds_array(
                &plane,
                "grid_spacing",
                Array1::from_vec(vec![px, px]).view(),
            )?;
            attr_str(&spacing, "unit", "micrometers")?;
        }
        plane.link_soft(&device_path, "device")?;
        let channel = self.group(
            &plane,
            "OpticalChannel",
            "OpticalChannel",
            &format!("{plane_path}/OpticalChannel"),
        )?;
        ds_str(&channel, "description", "the emission channel")?;
        ds_num(&channel, "emission_lambda", s.emission_lambda_nm)?;

        // /processing/ophys
        let module_path = "/processing/ophys";
        let module = self.group(
            &file.group("processing")?,
            "ophys",
            "ProcessingModule",
            module_path,
        )?;
        attr_str(
            &module,
            "description",
            &format!(
                "Optical physiology processed by {} (run {}, workflow sha256 {}): registration, \
                 detection, CNMF demixing, QC and OASIS deconvolution; the run's provenance record \
                 is in /general/source_script",
                r.tool, r.run_id, r.workflow_sha256
            ),
        )?;
        let segmentation_path = format!("{module_path}/ImageSegmentation");
        let segmentation = self.group(
            &module,
            "ImageSegmentation",
            "ImageSegmentation",
            &segmentation_path,
        )?;
        let table_path = format!("{segmentation_path}/PlaneSegmentation");
        let table = self.group(
            &segmentation,
            "PlaneSegmentation",
            "PlaneSegmentation",
            &table_path,
        )?;
        attr_str(
            &table,
            "description",
            "ROIs found by tessera (CNMF footprints, peak weight 1)",
        )?;
        attr_strs(
            &table,
            "colnames",
            &["pixel_mask", "accepted", "snr", "r_value"],
        )?;
        table.link_soft(plane_path, "imaging_plane")?;
        // Required by the schema; the footprints are their own reference.
        table.create_group("reference_images")?;
        let k = r.fluorescence.nrows();
        let ids = ds_array(&table, "id", Array1::from_iter(0..k as i64).view())?;
        self.typed(
            &ids,
            &format!("{table_path}/id"),
            "ElementIdentifiers",
            "hdmf-common",
        )?;
        // Pixels grouped by ROI, in ROI order; the index holds each ROI's end.
        let mut order: Vec<usize> = (0..r.cell.len()).collect();
        order.sort_by_key(|&i| (r.cell[i], r.pixel[i]));
        let masks: Vec<PixelMask> = order
            .iter()
            .map(|&i| PixelMask {
                x: r.pixel[i] % r.width as u32,
                y: r.pixel[i] / r.width as u32,
                weight: r.weight[i],
            })
            .collect();
        let mut ends = vec![0u64; k];
        for &i in &order {
            ends[r.cell[i] as usize] += 1;
        }
        for i in 1..k {
            ends[i] += ends[i - 1];
        }
        let mask = ds_array(&table, "pixel_mask", Array1::from_vec(masks).view())?;
        self.typed(
            &mask,
            &format!("{table_path}/pixel_mask"),
            "VectorData",
            "hdmf-common",
        )?;
        attr_str(
            &mask,
            "description",
            "the ROI's pixels: x (column), y (row) and weight",
        )?;
        let index = ds_array(&table, "pixel_mask_index", Array1::from_vec(ends).view())?;
        self.typed(
            &index,
            &format!("{table_path}/pixel_mask_index"),
            "VectorIndex",
            "hdmf-common",
        )?;
        attr_str(
            &index,
            "description",
            "the end of each ROI's pixels in pixel_mask",
        )?;
        let target: ObjectReference1 = file.reference(&format!("{table_path}/pixel_mask"))?;
        index
            .new_attr::<ObjectReference1>()
            .create("target")?
            .write_scalar(&target)?;
        let columns: [(&str, &str, Array1<f64>); 2] = [
            (
                "snr",
                "trace signal-to-noise ratio (QC)",
                Array1::from_vec(r.snr.clone()),
            ),
            (
                "r_value",
                "spatial correlation of footprint and movie (QC)",
                Array1::from_vec(r.r_value.clone()),
            ),
        ];
        let accepted = ds_array(
            &table,
            "accepted",
            Array1::from_iter(r.accepted.iter().map(|&a| a != 0)).view(),
        )?;
        self.typed(
            &accepted,
            &format!("{table_path}/accepted"),
            "VectorData",
            "hdmf-common",
        )?;
        attr_str(
            &accepted,
            "description",
            "the QC decision: true if the ROI passed",
        )?;
        for (name, description, values) in columns {
            let d = ds_array(&table, name, values.view())?;
            self.typed(
                &d,
                &format!("{table_path}/{name}"),
                "VectorData",
                "hdmf-common",
            )?;
            attr_str(&d, "description", description)?;
        }

        let fluorescence_path = format!("{module_path}/Fluorescence");
        let fluorescence =
            self.group(&module, "Fluorescence", "Fluorescence", &fluorescence_path)?;
        self.roi_series(
            file,
            &fluorescence,
            &format!("{fluorescence_path}/RoiResponseSeries"),
            "RoiResponseSeries",
            &r.fluorescence,
            "F: each ROI's demixed trace plus the background under its footprint (the F of dF/F)",
            "a.u.",
            r.rate,
            &table_path,
        )?;
        self.roi_series(
            file,
            &fluorescence,
            &format!("{fluorescence_path}/Deconvolved"),
            "Deconvolved",
            &r.spikes,
            "spike amplitudes inferred by OASIS (NaN where deconvolution failed)",
            "a.u.",
            r.rate,
            &table_path,
        )?;
        let dff_path = format!("{module_path}/DfOverF");
        let dff = self.group(&module, "DfOverF", "DfOverF", &dff_path)?;
        self.roi_series(
            file,
            &dff,
            &format!("{dff_path}/RoiResponseSeries"),
            "RoiResponseSeries",
            &r.dff,
            "dF/F: (F - F0) / F0 with F0 the running 8th percentile of F over 30 s",
            "n.a.",
            r.rate,
            &table_path,
        )?;
        if !r.images.is_empty() {
            let images_path = format!("{module_path}/SummaryImages");
            let images = self.group(&module, "SummaryImages", "Images", &images_path)?;
            attr_str(
                &images,
                "description",
                "summary images of the registered movie",
            )?;
            for (name, image) in &r.images {
                let d = ds_array(&images, name, image.view())?;
                self.typed(
                    &d,
                    &format!("{images_path}/{name}"),
                    "GrayscaleImage",
                    "core",
                )?;
                attr_str(&d, "description", &format!("the {name} image"))?;
            }
        }
        if s.raw == RawData::Copy {
            self.raw_movie(file, r, plane_path)?;
        }
        if let Some(shifts) = &r.shifts {
            let path = format!("{module_path}/RegistrationShifts");
            let g = self.group(&module, "RegistrationShifts", "TimeSeries", &path)?;
            attr_str(
                &g,
                "description",
                "rigid motion per frame: (dy, dx) in pixels",
            )?;
            attr_str(&g, "comments", "no comments")?;
            self.series_data(&g, shifts, "pixels", r.rate)?;
        }
        Ok(())
    }

    /// `/acquisition/TwoPhotonSeries`: the run's input movie copied in runs of frames, in its own
    /// element type, chunked about 1 MiB and gzip-compressed.
    fn raw_movie(&self, file: &hdf5::File, r: &Results, plane_path: &str) -> hdf5::Result<()> {
        let rec = tessera_io::Recording::open(&r.input, r.input_array.as_deref())
            .map_err(|e| hdf5::Error::from(format!("the run's input {}: {e}", r.input)))?;
        let shape = rec.shape();
        let (t, y, x) = (shape.t as usize, shape.y as usize, shape.x as usize);
        if t != r.frames {
            return Err(hdf5::Error::from(format!(
                "the run's input {} has {t} frames, the run {}: it changed since",
                r.input, r.frames
            )));
        }
        let path = "/acquisition/TwoPhotonSeries";
        let g = self.group(
            &file.group("acquisition")?,
            "TwoPhotonSeries",
            "TwoPhotonSeries",
            path,
        )?;
        attr_str(
            &g,
            "description",
            &format!("the raw movie, copied from {}", r.input),
        )?;
        attr_str(&g, "comments", "no comments")?;
        g.link_soft(plane_path, "imaging_plane")?;
        macro_rules! copy {
            ($ty:ty) => {{
                let frame = y * x * std::mem::size_of::<$ty>();
                let per_chunk = ((1usize << 20) / frame.max(1)).clamp(1, t.max(1));
                let d = g
                    .new_dataset::<$ty>()
                    .shape((t, y, x))
                    .chunk((per_chunk, y, x))
                    .deflate(4)
                    .create("data")?;
                // Runs of about 64 MiB, whole chunks each.
                let run = ((64usize << 20) / frame.max(1)).max(per_chunk) / per_chunk * per_chunk;
                let mut t0 = 0usize;
                while t0 < t {
                    let t1 = (t0 + run).min(t);
                    let b = Box3 {
                        t: t0 as u64..t1 as u64,
                        y: 0..y as u64,
                        x: 0..x as u64,
                    };
                    let a = rec
                        .read_box_as::<$ty>(&b)
                        .map_err(|e| hdf5::Error::from(e.to_string()))?;
                    d.write_slice(&a, ndarray::s![t0..t1, .., ..])?;
                    t0 = t1;
                }
                d
            }};
        }
        let d = match rec.dtype() {
            Dtype::Uint8 => copy!(u8),
            Dtype::Uint16 => copy!(u16),
            Dtype::Uint32 => copy!(u32),
            Dtype::Uint64 => copy!(u64),
            Dtype::Int8 => copy!(i8),
            Dtype::Int16 => copy!(i16),
            Dtype::Int32 => copy!(i32),
            Dtype::Int64 => copy!(i64),
            Dtype::Float32 => copy!(f32),
            Dtype::Float64 => copy!(f64),
        };
        attr_str(&d, "unit", "n.a.")?;
        attr_num(&d, "conversion", 1.0f32)?;
        attr_num(&d, "offset", 0.0f32)?;
        attr_num(&d, "resolution", -1.0f32)?;
        let t0 = ds_num(&g, "starting_time", 0.0f64)?;
        attr_num(&t0, "rate", r.rate as f32)?;
        attr_str(&t0, "unit", "seconds")?;
        Ok(())
    }

    fn series_data(
        &self,
        g: &Group,
        data: &Array2<f32>,
        unit: &str,
        rate: f64,
    ) -> hdf5::Result<()> {
        let d = ds_array(g, "data", data.view())?;
        attr_str(&d, "unit", unit)?;
        attr_num(&d, "conversion", 1.0f32)?;
        attr_num(&d, "offset", 0.0f32)?;
        attr_num(&d, "resolution", -1.0f32)?;
        let t0 = ds_num(g, "starting_time", 0.0f64)?;
        attr_num(&t0, "rate", rate as f32)?;
        attr_str(&t0, "unit", "seconds")?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn roi_series(
        &self,
        file: &hdf5::File,
        parent: &Group,
        path: &str,
        name: &str,
        values: &Array2<f32>,
        description: &str,
        unit: &str,
        rate: f64,
        table_path: &str,
    ) -> hdf5::Result<()> {
        let g = self.group(parent, name, "RoiResponseSeries", path)?;
        attr_str(&g, "description", description)?;
        attr_str(&g, "comments", "no comments")?;
        // NWB stores time first: (t, ROI).
        self.series_data(
            &g,
            &values.t().as_standard_layout().into_owned(),
            unit,
            rate,
        )?;
        let k = values.nrows();
        let rois = ds_array(&g, "rois", Array1::from_iter(0..k as i64).view())?;
        self.typed(
            &rois,
            &format!("{path}/rois"),
            "DynamicTableRegion",
            "hdmf-common",
        )?;
        attr_str(
            &rois,
            "description",
            "the ROIs of PlaneSegmentation, in order",
        )?;
        let table: ObjectReference1 = file.reference(table_path)?;
        rois.new_attr::<ObjectReference1>()
            .create("table")?
            .write_scalar(&table)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_version_4_uuids_fixed_by_identifier_and_path() {
        let w = Writer {
            seed: "tessera-abc".into(),
        };
        let id = w.object_id("/processing/ophys");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!("89ab".contains(&parts[3][..1]), "{id}");
        assert_eq!(id, w.object_id("/processing/ophys"));
        assert_ne!(id, w.object_id("/processing"));
        let other = Writer {
            seed: "tessera-abd".into(),
        };
        assert_ne!(id, other.object_id("/processing/ophys"));
    }

    #[test]
    fn a_missing_start_time_and_an_existing_file_are_refused_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("x.nwb");
        let e = export("/nonexistent.run", &out, &Session::new(""), false).expect_err("no time");
        assert!(e.to_string().contains("session_start_time"), "{e}");
        let bad = Session {
            device: "../scope".into(),
            ..Session::new("2026-03-01T10:15:00+01:00")
        };
        let e = export("/nonexistent.run", &out, &bad, false).expect_err("bad device");
        assert!(e.to_string().contains("device"), "{e}");
        std::fs::write(&out, b"keep").expect("write");
        let e = export("/nonexistent.run", &out, &Session::new(""), false).expect_err("exists");
        assert!(e.to_string().contains("give --overwrite"), "{e}");
        assert_eq!(std::fs::read(&out).expect("read"), b"keep");
    }
}
