//! `tessera report RUN -o report.html`: the run's results and how it ran, as one self-contained
//! HTML page (tessera-report).

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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.output.exists() && !a.overwrite {
        anyhow::bail!(
            "{} exists: give --overwrite to replace it",
            a.output.display()
        );
    }
    let report = tessera_report::render(&a.run)?;
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
