//! `tessera export nwb RUN -o FILE.nwb`: a finished run's results as an NWB file
//! (tessera-nwb; layout in docs/FORMATS.md).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use tessera_core::session as defaults;
use tessera_nwb::{RawData, Session, Subject};

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum Format {
    /// An NWB 2 file (HDF5): ROIs as pixel masks, F, dF/F and deconvolved traces, summary images,
    /// registration shifts and the run's provenance, for pynwb and DANDI.
    Nwb(NwbArgs),
}

#[derive(Debug, ClapArgs)]
pub struct NwbArgs {
    /// The run's output (a path or URI): it must be complete.
    pub run: String,
    /// The NWB file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub overwrite: bool,
    /// When the session started: ISO 8601 with a UTC offset (2026-03-01T10:15:00+01:00).
    #[arg(long)]
    pub session_start_time: String,
    #[arg(long, default_value = defaults::DEFAULT_DESCRIPTION)]
    pub session_description: String,
    /// The file's identifier (default: derived from the run's input and workflow).
    #[arg(long)]
    pub identifier: Option<String>,
    /// Repeat for several ("Last, First").
    #[arg(long)]
    pub experimenter: Vec<String>,
    #[arg(long)]
    pub lab: Option<String>,
    #[arg(long)]
    pub institution: Option<String>,
    /// The subject's id; with --species, --sex and --age, writes /general/subject (DANDI needs it).
    #[arg(long)]
    pub subject_id: Option<String>,
    /// Latin binomial (Mus musculus) or NCBI taxonomy URI; required with --subject-id.
    #[arg(long)]
    pub species: Option<String>,
    /// M, F, U (unknown) or O (other).
    #[arg(long, default_value = "U")]
    pub sex: String,
    /// ISO 8601 duration, e.g. P90D.
    #[arg(long)]
    pub age: Option<String>,
    #[arg(long, default_value = defaults::DEFAULT_DEVICE)]
    pub device: String,
    #[arg(long, default_value = defaults::DEFAULT_INDICATOR)]
    pub indicator: String,
    /// Brain region imaged.
    #[arg(long, default_value = defaults::DEFAULT_LOCATION)]
    pub location: String,
    /// Nanometres.
    #[arg(long, default_value_t = defaults::DEFAULT_EXCITATION_NM)]
    pub excitation_lambda: f64,
    /// Nanometres.
    #[arg(long, default_value_t = defaults::DEFAULT_EMISSION_NM)]
    pub emission_lambda: f64,
    /// Micrometres per pixel.
    #[arg(long)]
    pub pixel_size: Option<f64>,
    /// The raw movie: `copy` writes it into the file as /acquisition/TwoPhotonSeries (chunked,
    /// gzip; as large as the recording), `none` leaves it in the recording the run names.
    #[arg(long, value_parser = ["none", "copy"], default_value = "none")]
    pub raw: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.format {
        Format::Nwb(a) => nwb(a),
    }
}

fn nwb(a: NwbArgs) -> anyhow::Result<()> {
    let subject = match (&a.subject_id, &a.age) {
        (Some(id), Some(age)) => Some(Subject {
            subject_id: id.clone(),
            species: a.species.clone().ok_or_else(|| {
                anyhow::anyhow!("give --species with --subject-id (e.g. \"Mus musculus\")")
            })?,
            sex: a.sex.clone(),
            age: age.clone(),
        }),
        (None, None) => None,
        _ => anyhow::bail!("give --subject-id and --age together (with --species and --sex)"),
    };
    let session = Session {
        session_description: a.session_description,
        session_start_time: a.session_start_time,
        identifier: a.identifier,
        experimenter: a.experimenter,
        lab: a.lab,
        institution: a.institution,
        subject,
        device: a.device,
        indicator: a.indicator,
        location: a.location,
        excitation_lambda_nm: a.excitation_lambda,
        emission_lambda_nm: a.emission_lambda,
        pixel_size_um: a.pixel_size,
        raw: if a.raw == "copy" {
            RawData::Copy
        } else {
            RawData::None
        },
    };
    let done = tessera_nwb::export(&a.run, &a.output, &session, a.overwrite)?;
    println!(
        "exported {} ROIs x {} frames of {} -> {} (identifier {})",
        done.rois,
        done.frames,
        a.run,
        done.path.display(),
        done.identifier
    );
    Ok(())
}
