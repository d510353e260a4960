//! `tessera report RUN -o report.html [--truth SIM]`: the run's results and how it ran, as one
//! self-contained HTML page (tessera-report), with ground truth drawn over it when given.

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's output (a path or URI): it must be complete.
    pub run: String,
    /// The HTML file to write.
    #[arg(short, long, default_value = "report.html")]
    pub output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub overwrite: bool,
    /// Ground truth to draw over the mean image (matched, missed and false ROIs, as `tessera
    /// evaluate` scores them): a neurofinder regions JSON file or a tessera simulation.
    #[arg(long)]
    pub truth: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.output.exists() && !a.overwrite {
        anyhow::bail!(
            "{} exists: give --overwrite to replace it",
            a.output.display()
        );
    }
    let overlay = match &a.truth {
        Some(t) => Some(crate::evaluate::overlay(t, &a.run)?),
        None => None,
    };
    let report = tessera_report::render(&a.run, overlay.as_ref())?;
    let name = a
        .output
        .file_name()
        .with_context(|| format!("{}: not a file name", a.output.display()))?;
    let partial = a
        .output
        .with_file_name(format!(".{}.partial", name.to_string_lossy()));
    std::fs::write(&partial, report.html.as_bytes())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &a.output).with_context(|| {
        format!(
            "cannot move {} to {}",
            partial.display(),
            a.output.display()
        )
    })?;
    println!(
        "report of {}: {} ROIs ({} accepted), {} figures -> {}",
        a.run,
        report.rois,
        report.accepted,
        report.figures,
        a.output.display()
    );
    Ok(())
}
