//! The run report: one self-contained HTML page (no external file, script or font; the figures
//! are PNGs inlined as data URIs) that says what a run found and how it ran:
//!
//! - the mean and correlation images with every ROI outlined (green: accepted by QC, red:
//!   rejected) and the spatial tiles of the detection stage drawn over the mean image;
//! - given an [`Overlay`] (scored by the caller), the ground truth over the mean image: matched
//!   ROIs, missed truth and false ROIs, with the counts and F1;
//! - dF/F of the accepted ROIs with the highest SNR, with the spikes OASIS inferred;
//! - the registration's shifts over time;
//! - histograms of the QC measures (SNR, spatial r-value, size);
//! - the run: input and its digest, workflow and its hash, run id, tasks, workers, retries, time
//!   per stage (from every task's record), and the ROI table.
//!
//! Counts shown carry ids (`roi-count`, `accepted-count`) so tests can read them back, and a
//! two-line inline script records on `<body data-images-decoded="N/M">` how many of the page's
//! images the browser decoded.

mod canvas;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use ndarray::{Array2, Ix2};
use serde_json::Value;
use tessera_io::{IoError, Location, RunRoot, RunSource, Store};

use canvas::{BLUE, CYAN, Canvas, GREEN, GREY, MAGENTA, ORANGE, RED, WHITE, YELLOW};

/// What can go wrong making a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{run}: {reason}")]
    Invalid { run: String, reason: String },
}

fn invalid(run: &str, reason: impl Into<String>) -> ReportError {
    ReportError::Invalid {
        run: run.to_string(),
        reason: reason.into(),
    }
}

/// What a report shows, for the caller's summary line.
#[derive(Debug, Clone)]
pub struct Report {
    pub html: String,
    pub rois: usize,
    pub accepted: usize,
    pub figures: usize,
}

/// Ground truth drawn over the mean image: what matched, what was missed, what is false. The
/// caller scores (tessera evaluate's IoU >= 0.5 Hungarian convention); the report only draws.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// Where the truth came from, for the caption.
    pub source: String,
    /// Each truth ROI's pixels as (row, col).
    pub truth: Vec<Vec<[u32; 2]>>,
    /// Per truth ROI: matched by an estimate.
    pub truth_matched: Vec<bool>,
    /// Per truth ROI: "don't care" (not counted: mostly outside the field, or silent).
    pub truth_ignored: Vec<bool>,
    /// Each scored estimate's pixels (the run's accepted ROIs).
    pub estimates: Vec<Vec<[u32; 2]>>,
    /// Per estimate: matched to a counted truth ROI, or to a "don't care" one.
    pub estimate_matched: Vec<bool>,
    pub estimate_ignored: Vec<bool>,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
}

struct Qc {
    id: usize,
    snr: f64,
    r_value: f64,
    size_px: f64,
    centroid: (f64, f64),
    accepted: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn img(c: &Canvas, alt: &str) -> String {
    format!(
        "<img alt=\"{}\" width=\"{}\" height=\"{}\" src=\"data:image/png;base64,{}\">",
        esc(alt),
        c.width,
        c.height,
        base64::engine::general_purpose::STANDARD.encode(c.png())
    )
}

/// Renders the report of the finished run at `run` (a path or URI), with ground truth drawn over
/// it when `overlay` is given.
pub fn render(run: &str, overlay: Option<&Overlay>) -> Result<Report, ReportError> {
    let store = Store::open(&Location::parse(run)?)?;
    RunRoot::finished(&store.root_attributes()?).map_err(|reason| invalid(run, reason))?;
    render_from(&store, run, None, overlay)
}

/// Renders the report of the run in `store` (named `run` in messages); `record` is the run's
/// provenance record when it is not in the store yet (the publish task renders before finishing).
pub fn render_from<S: RunSource>(
    store: &S,
    run: &str,
    record: Option<&Value>,
    overlay: Option<&Overlay>,
) -> Result<Report, ReportError> {
    let root = RunRoot::from_attributes(&store.root_attributes()?)
        .map_err(|reason| invalid(run, reason))?;
    let (frames, height, width) = (root.frames, root.height, root.width);
    let rate = root.frame_rate_hz;
    let meta = root.meta;
    let table = |path: &str| -> Result<Array2<f32>, ReportError> {
        store
            .array::<f32>(path)?
            .into_dimensionality::<Ix2>()
            .map_err(|_| invalid(run, format!("{path} is not two-dimensional")))
    };
    let cells: Vec<u32> = store
        .array::<u32>("rois/footprints/cell")?
        .into_iter()
        .collect();
    let pixels: Vec<u32> = store
        .array::<u32>("rois/footprints/pixel")?
        .into_iter()
        .collect();
    let weights: Vec<f32> = store
        .array::<f32>("rois/footprints/weight")?
        .into_iter()
        .collect();
    let dff = table("rois/dff")?;
    let spikes = table("rois/spikes")?;
    let accepted: Vec<bool> = store
        .array::<u8>("rois/accepted")?
        .into_iter()
        .map(|a| a != 0)
        .collect();
    let k = accepted.len();
    let qc_json: Vec<Value> = match store.bytes("rois/qc.json")? {
        Some(b) => {
            serde_json::from_slice(&b).map_err(|e| invalid(run, format!("rois/qc.json: {e}")))?
        }
        None => Vec::new(),
    };
    let num = |q: Option<&Value>, name: &str| q.and_then(|q| q[name].as_f64()).unwrap_or(f64::NAN);
    let qc: Vec<Qc> = (0..k)
        .map(|i| {
            let q = qc_json.get(i);
            Qc {
                id: i,
                snr: num(q, "snr"),
                r_value: num(q, "r_value"),
                size_px: num(q, "size_px"),
                centroid: (
                    q.and_then(|q| q["centroid"][0].as_f64())
                        .unwrap_or(f64::NAN),
                    q.and_then(|q| q["centroid"][1].as_f64())
                        .unwrap_or(f64::NAN),
                ),
                accepted: accepted[i],
            }
        })
        .collect();
    let n_accepted = accepted.iter().filter(|&&a| a).count();
    let tasks: Vec<Value> = store
        .bytes("run/tasks.jsonl")?
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default();
    let record: Value = match record {
        Some(r) => r.clone(),
        None => store
            .bytes("provenance/record.json")?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
    };

    // Masks per ROI, for outlines: the pixels of weight >= 0.2 (peak 1), as in regions.json.
    let mut masks = vec![vec![false; height * width]; k];
    for ((&c, &p), &w) in cells.iter().zip(&pixels).zip(&weights) {
        if let Some(m) = masks.get_mut(c as usize)
            && (p as usize) < m.len()
            && w >= 0.2
        {
            m[p as usize] = true;
        }
    }
    let scale = (512 / width.max(1)).clamp(1, 8);
    let outlined = |image: &Array2<f32>, grid: bool| -> Canvas {
        let mut c = Canvas::from_image(image, scale);
        if grid {
            for t in tasks.iter().filter(|t| t["task"]["stage"] == "detect") {
                let core = &t["task"]["tile"]["core"];
                let r = |a: &str, e: &str| core[a][e].as_i64().unwrap_or(0) * scale as i64;
                let (y0, y1, x0, x1) = (
                    r("y", "start"),
                    r("y", "end"),
                    r("x", "start"),
                    r("x", "end"),
                );
                c.line(x0, y0, x1 - 1, y0, CYAN);
                c.line(x0, y1 - 1, x1 - 1, y1 - 1, CYAN);
                c.line(x0, y0, x0, y1 - 1, CYAN);
                c.line(x1 - 1, y0, x1 - 1, y1 - 1, CYAN);
            }
        }
        for (i, m) in masks.iter().enumerate() {
            c.outline(
                m,
                width,
                height,
                scale,
                if accepted[i] { GREEN } else { RED },
            );
        }
        c
    };
    let mut figures = Vec::new();
    let mut body = String::new();
    let mut images_html = String::new();
    for (name, caption, grid) in [
        (
            "mean",
            "Mean image; ROIs outlined (green: accepted, red: rejected); cyan: the detection stage's tiles",
            true,
        ),
        (
            "correlation",
            "Local correlation image; ROIs outlined",
            false,
        ),
    ] {
        if store.bytes(&format!("summary/{name}/zarr.json"))?.is_some() {
            let c = outlined(&table(&format!("summary/{name}"))?, grid);
            let _ = write!(
                images_html,
                "<figure>{}<figcaption>{}</figcaption></figure>",
                img(&c, caption),
                esc(caption)
            );
            figures.push(name);
        }
    }

    // Ground truth over the mean image.
    let mut truth_html = String::new();
    if let Some(o) = overlay
        && store.bytes("summary/mean/zarr.json")?.is_some()
    {
        let mut c = Canvas::from_image(&table("summary/mean")?, scale);
        let mut draw = |pixels: &[[u32; 2]], colour| {
            let mut mask = vec![false; height * width];
            for &[r, col] in pixels {
                if (r as usize) < height && (col as usize) < width {
                    mask[r as usize * width + col as usize] = true;
                }
            }
            c.outline(&mask, width, height, scale, colour);
        };
        let count = |v: &[bool], want: bool| v.iter().filter(|&&b| b == want).count();
        for (i, t) in o.truth.iter().enumerate() {
            let ignored = o.truth_ignored.get(i).copied().unwrap_or(false);
            let matched = o.truth_matched.get(i).copied().unwrap_or(false);
            if !ignored && !matched {
                draw(t, YELLOW);
            }
        }
        for (j, e) in o.estimates.iter().enumerate() {
            if o.estimate_ignored.get(j).copied().unwrap_or(false) {
                continue;
            }
            let matched = o.estimate_matched.get(j).copied().unwrap_or(false);
            draw(e, if matched { GREEN } else { MAGENTA });
        }
        let missed = o
            .truth
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !o.truth_ignored.get(*i).copied().unwrap_or(false)
                    && !o.truth_matched.get(*i).copied().unwrap_or(false)
            })
            .count();
        let matched = count(&o.truth_matched, true);
        let false_positives = o
            .estimate_matched
            .iter()
            .zip(&o.estimate_ignored)
            .filter(|(m, i)| !**m && !**i)
            .count();
        let caption = format!(
            "Against the ground truth of {}: matched ROIs (green), missed truth (yellow), false ROIs (magenta); IoU >= 0.5, Hungarian; cells that do not count are not drawn",
            o.source
        );
        let _ = write!(
            truth_html,
            "<p>Against the ground truth: <span id=\"matched-count\">{matched}</span> matched, \
             <span id=\"missed-count\">{missed}</span> missed, \
             <span id=\"false-count\">{false_positives}</span> false; recall {:.3}, precision {:.3}, \
             F1 <span id=\"f1\">{:.3}</span>.</p><figure>{}<figcaption>{}</figcaption></figure>",
            o.recall,
            o.precision,
            o.f1,
            img(&c, &caption),
            esc(&caption)
        );
        figures.push("truth");
    }

    // Traces: the accepted ROIs with the highest SNR.
    let mut best: Vec<&Qc> = qc.iter().filter(|q| q.accepted).collect();
    best.sort_by(|a, b| b.snr.total_cmp(&a.snr));
    best.truncate(8);
    let mut traces_html = String::new();
    if !best.is_empty() && frames > 0 {
        let lane = 70i64;
        let (w, margin) = (900i64, 10i64);
        let mut c = Canvas::new(
            w as usize,
            (lane * best.len() as i64 + margin) as usize,
            WHITE,
        );
        for (row, q) in best.iter().enumerate() {
            let y0 = margin + row as i64 * lane;
            let d: Vec<f32> = dff.row(q.id).to_vec();
            let finite: Vec<f32> = d.iter().copied().filter(|v| v.is_finite()).collect();
            let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            c.line(0, y0 + lane - 12, w, y0 + lane - 12, GREY);
            c.trace(&d, 0, y0, w - 1, y0 + lane - 18, lo, hi, BLUE);
            let s = spikes.row(q.id);
            let top = s
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0f32, f32::max);
            for (t, &v) in s.iter().enumerate() {
                if v.is_finite() && top > 0.0 && v > 0.05 * top {
                    let x = (w - 1) * t as i64 / (frames.max(2) as i64 - 1);
                    let h = (2.0 + 8.0 * v / top) as i64;
                    c.line(x, y0 + lane - 2, x, y0 + lane - 2 - h, ORANGE);
                }
            }
        }
        let ids: Vec<String> = best
            .iter()
            .map(|q| format!("{} (SNR {:.1})", q.id, q.snr))
            .collect();
        let caption = format!(
            "dF/F (blue) and inferred spikes (orange) of the accepted ROIs with the highest SNR, top to bottom: {}; {} frames at {:.2} Hz ({:.1} s)",
            ids.join(", "),
            frames,
            rate,
            frames as f64 / rate
        );
        let _ = write!(
            traces_html,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            img(&c, &caption),
            esc(&caption)
        );
        figures.push("traces");
    }

    // Registration shifts.
    let mut shifts_html = String::new();
    if store.bytes("registration/shifts/zarr.json")?.is_some() {
        let s = table("registration/shifts")?;
        let dy: Vec<f32> = s.column(0).to_vec();
        let dx: Vec<f32> = s.column(1).to_vec();
        let all = dy.iter().chain(&dx).copied().filter(|v| v.is_finite());
        let m = all.fold(0.5f32, |m, v| m.max(v.abs()));
        let mut c = Canvas::new(900, 200, WHITE);
        c.line(0, 100, 899, 100, GREY);
        c.trace(&dy, 0, 5, 899, 195, -m, m, BLUE);
        c.trace(&dx, 0, 5, 899, 195, -m, m, ORANGE);
        let caption = format!(
            "Registration: shift per frame, dy (blue) and dx (orange), from -{m:.2} to +{m:.2} pixels"
        );
        let _ = write!(
            shifts_html,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            img(&c, &caption),
            esc(&caption)
        );
        figures.push("shifts");
    }

    // QC histograms.
    let mut qc_html = String::new();
    if k > 0 {
        let mut c = Canvas::new(900, 160, WHITE);
        let mut ranges = Vec::new();
        let measures: [(&str, Vec<f64>); 3] = [
            ("SNR", qc.iter().map(|q| q.snr).collect()),
            ("spatial r-value", qc.iter().map(|q| q.r_value).collect()),
            ("size (px)", qc.iter().map(|q| q.size_px).collect()),
        ];
        for (panel, (name, values)) in measures.iter().enumerate() {
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let bins = 20usize;
            let mut counts = vec![[0usize; 2]; bins];
            for (v, q) in values.iter().zip(&qc) {
                if v.is_finite() {
                    let b = if hi > lo {
                        (((v - lo) / (hi - lo)) * bins as f64) as usize
                    } else {
                        0
                    };
                    counts[b.min(bins - 1)][usize::from(q.accepted)] += 1;
                }
            }
            let top = counts.iter().map(|c| c[0] + c[1]).max().unwrap_or(1).max(1);
            let x0 = panel as i64 * 300 + 10;
            for (b, n) in counts.iter().enumerate() {
                let bx = x0 + b as i64 * 14;
                let h_acc = (140 * n[1] / top) as i64;
                let h_rej = (140 * n[0] / top) as i64;
                c.rect(bx, 150 - h_acc, bx + 12, 150, GREEN);
                c.rect(bx, 150 - h_acc - h_rej, bx + 12, 150 - h_acc, RED);
            }
            c.line(x0, 150, x0 + 280, 150, GREY);
            ranges.push(format!("{name} from {lo:.2} to {hi:.2}"));
        }
        let caption = format!(
            "QC measures of every ROI (green: accepted, red: rejected), 20 bins each: {}",
            ranges.join("; ")
        );
        let _ = write!(
            qc_html,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            img(&c, &caption),
            esc(&caption)
        );
        figures.push("qc");
    }

    // Time per stage, from the tasks' records.
    let mut stages: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    let mut workers = std::collections::BTreeSet::new();
    for t in &tasks {
        let e = stages
            .entry(t["task"]["stage"].as_str().unwrap_or("?").to_string())
            .or_insert((0, 0.0, 0.0));
        let wall = t["wall_s"].as_f64().unwrap_or(0.0);
        e.0 += 1;
        e.1 += wall;
        e.2 = e.2.max(wall);
        if let Some(w) = t["worker"].as_str() {
            workers.insert(w.to_string());
        }
    }
    let mut stage_rows = String::new();
    let order: Vec<String> = meta["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for name in order.iter().chain(std::iter::once(&"publish".to_string())) {
        if let Some((n, total, max)) = stages.get(name) {
            let _ = write!(
                stage_rows,
                "<tr><td>{}</td><td>{n}</td><td>{total:.2}</td><td>{max:.2}</td></tr>",
                esc(name)
            );
        }
    }
    let mut roi_rows = String::new();
    let mut by_snr: Vec<&Qc> = qc.iter().collect();
    by_snr.sort_by(|a, b| b.snr.total_cmp(&a.snr));
    for q in by_snr.iter().take(25) {
        let _ = write!(
            roi_rows,
            "<tr class=\"{}\"><td>{}</td><td>{:.1}, {:.1}</td><td>{:.2}</td><td>{:.3}</td><td>{:.0}</td><td>{}</td></tr>",
            if q.accepted { "ok" } else { "no" },
            q.id,
            q.centroid.0,
            q.centroid.1,
            q.snr,
            q.r_value,
            q.size_px,
            if q.accepted { "yes" } else { "no" }
        );
    }
    let text = |v: &Value| esc(v.as_str().unwrap_or("-"));
    let _ = write!(
        body,
        "<h1>tessera run report</h1>\
         <p class=\"lead\"><span id=\"roi-count\">{k}</span> ROIs found, \
         <span id=\"accepted-count\">{n_accepted}</span> accepted by QC, in {frames} frames of \
         {height} x {width} pixels at {rate:.2} Hz.</p>\
         <table class=\"meta\">\
         <tr><th>input</th><td>{input}</td></tr>\
         <tr><th>input digest</th><td><code>{digest}</code></td></tr>\
         <tr><th>workflow</th><td>{workflow} <code>{wsha}</code></td></tr>\
         <tr><th>run</th><td>{run_id}</td></tr>\
         <tr><th>tool</th><td>{tool} {version} <code>{commit}</code></td></tr>\
         <tr><th>started / finished</th><td>{started} / {finished}</td></tr>\
         <tr><th>tasks</th><td>{ntasks} ({executed} computed, {recovered} recovered from earlier attempts), {retries} retries, {nworkers} worker(s)</td></tr>\
         </table>\
         <h2>Cells</h2>{images_html}{truth_html}\
         <h2>Activity</h2>{traces_html}\
         <h2>Motion</h2>{shifts}\
         <h2>Quality control</h2>{qc_html}\
         <table><tr><th>ROI</th><th>centroid (row, col)</th><th>SNR</th><th>r-value</th><th>size (px)</th><th>accepted</th></tr>{roi_rows}</table>\
         <h2>Run</h2><table><tr><th>stage</th><th>tasks</th><th>task time, total (s)</th><th>longest task (s)</th></tr>{stage_rows}</table>",
        input = text(&meta["input"]),
        digest = text(&meta["input_digest"]),
        workflow = text(&meta["workflow"]),
        wsha = text(&meta["workflow_sha256"]),
        run_id = text(&record["run_id"]),
        tool = text(&record["tool"]["name"]),
        version = text(&record["tool"]["version"]),
        commit = text(&record["tool"]["git_commit"]),
        started = text(&record["started_at"]),
        finished = text(&record["finished_at"]),
        ntasks = tasks.len(),
        executed = record["run"]["executed"],
        recovered = record["run"]["recovered"],
        retries = record["run"]["retries"],
        nworkers = workers.len(),
        shifts = if shifts_html.is_empty() {
            "<p>No registration stage in this workflow.</p>".to_string()
        } else {
            shifts_html
        },
    );
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tessera report: {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         tr.no td{{color:#a33}}figure{{margin:1em 0}}figcaption{{font-size:90%;color:#555}}\
         img{{image-rendering:pixelated;max-width:100%;height:auto}}code{{font-size:85%}}</style>\
         </head><body>{body}\
         <script>window.addEventListener('load',function(){{var i=Array.prototype.slice.call(document.images);\
         document.body.setAttribute('data-images-decoded',i.filter(function(x){{return x.complete&&x.naturalWidth>0;}}).length+'/'+i.length);}});</script>\
         </body></html>\n",
        title = text(&meta["workflow"]),
    );
    Ok(Report {
        html,
        rois: k,
        accepted: n_accepted,
        figures: figures.len(),
    })
}
