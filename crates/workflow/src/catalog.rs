//! The stage catalogue: every stage a workflow may `use`, what it consumes and produces, how it
//! tiles, and its parameters with types, defaults and one-line docs (`tessera stages` prints it).
//!
//! The defaults are the published ones of SCIENCE.md as the kernels implement them; a test in the
//! command-line crate checks that each default here deserializes into the kernels' parameter
//! structs and equals their `Default`, so the two cannot drift apart.

use serde::Serialize;
use serde_json::{Value, json};
use tessera_core::tiling::TilingKind;

/// What flows between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// A (t, y, x) movie: the recording, or a registered or denoised version of it.
    Movie,
    /// Per-frame rigid shifts (and, for piecewise registration, per-block shifts).
    Shifts,
    /// Mean, local-correlation and peak-to-noise images.
    Summary,
    /// Candidate cells: seeds with initial footprints.
    Seeds,
    /// Final footprints (sparse).
    Rois,
    /// Demixed fluorescence traces and dF/F.
    Traces,
    /// Inferred spikes and denoised calcium.
    Spikes,
    /// Per-component quality figures and accept/reject decisions.
    Qc,
}

impl DataKind {
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Movie => "movie",
            DataKind::Shifts => "shifts",
            DataKind::Summary => "summary images",
            DataKind::Seeds => "seeds",
            DataKind::Rois => "ROIs",
            DataKind::Traces => "traces",
            DataKind::Spikes => "spikes",
            DataKind::Qc => "QC",
        }
    }
}

/// The type of a parameter, with its valid range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ParamType {
    /// A number in `[min, max]` (`min_exclusive`: strictly above `min`).
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    /// An integer in `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// One of the listed words.
    Choice {
        options: &'static [&'static str],
    },
    /// `auto` (written `null` in the normalized workflow) or a value of the inner type; what
    /// `auto` means is in the parameter's doc.
    Auto {
        inner: Box<ParamType>,
    },
}

impl ParamType {
    /// How the type reads in messages and in `tessera stages`.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Float {
                min,
                max,
                min_exclusive,
            } => {
                let lo = if *min_exclusive { ">" } else { ">=" };
                if max.is_finite() {
                    format!("number {lo} {min}, <= {max}")
                } else {
                    format!("number {lo} {min}")
                }
            }
            ParamType::Int { min, max } => {
                if *max == i64::MAX {
                    format!("integer >= {min}")
                } else {
                    format!("integer in {min}..={max}")
                }
            }
            ParamType::Bool => "true or false".into(),
            ParamType::Choice { options } => format!("one of {}", options.join(", ")),
            ParamType::Auto { inner } => format!("auto or {}", inner.describe()),
        }
    }
}

/// One parameter of a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    #[serde(flatten)]
    pub ty: ParamType,
    /// The default, as it appears in the normalized workflow (`null` for `auto`).
    pub default: Value,
    pub doc: &'static str,
}

/// One stage a workflow may use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub consumes: &'static [DataKind],
    pub produces: &'static [DataKind],
    /// How its tasks cut the recording; `None`: one task over all ROIs (no pixels read).
    pub tiling: Option<TilingKind>,
    /// Float32 copies of its tile held at once, for the planner's memory estimate.
    pub copies: f64,
    pub params: Vec<ParamSpec>,
}

impl StageSpec {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

fn float(min: f64, max: f64) -> ParamType {
    ParamType::Float {
        min,
        max,
        min_exclusive: false,
    }
}

/// A number strictly above 0.
pub(crate) fn positive() -> ParamType {
    ParamType::Float {
        min: 0.0,
        max: f64::INFINITY,
        min_exclusive: true,
    }
}

fn int(min: i64, max: i64) -> ParamType {
    ParamType::Int { min, max }
}

fn auto(inner: ParamType) -> ParamType {
    ParamType::Auto {
        inner: Box::new(inner),
    }
}

fn p(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

/// Every stage, in the order a two-photon workflow runs them.
pub fn catalog() -> Vec<StageSpec> {
    use DataKind::*;
    vec![
        StageSpec {
            name: "register",
            summary: "rigid motion correction: phase correlation with a sub-pixel peak against an iteratively refined template",
            consumes: &[Movie],
            produces: &[Movie, Shifts],
            tiling: Some(TilingKind::Temporal),
            copies: 3.0,
            params: vec![
                p(
                    "max_shift_px",
                    positive(),
                    json!(15.0),
                    "largest shift searched, in pixels",
                ),
                p(
                    "smooth_sigma",
                    float(0.0, 20.0),
                    json!(1.15),
                    "Gaussian smoothing of the correlation map, in pixels",
                ),
                p(
                    "template_frames",
                    int(1, i64::MAX),
                    json!(200),
                    "frames sampled evenly to build the template",
                ),
                p(
                    "seed_frames",
                    int(1, i64::MAX),
                    json!(20),
                    "frames averaged in the initial template",
                ),
                p(
                    "iterations",
                    int(0, 100),
                    json!(3),
                    "refinement passes of the template",
                ),
            ],
        },
        StageSpec {
            name: "register-piecewise",
            summary: "piecewise-rigid motion correction (NoRMCorre/Suite2p nonrigid): rigid, then per-block shifts smoothed into a per-pixel field",
            consumes: &[Movie],
            produces: &[Movie, Shifts],
            tiling: Some(TilingKind::Temporal),
            copies: 4.0,
            params: vec![
                p(
                    "block_px",
                    int(16, i64::MAX),
                    json!(128),
                    "block edge in pixels; blocks overlap by half",
                ),
                p(
                    "max_shift_px",
                    positive(),
                    json!(5.0),
                    "largest residual shift of a block after the rigid shift, in pixels",
                ),
            ],
        },
        StageSpec {
            name: "denoise",
            summary: "local low-rank denoising (PMD-style): truncated SVD per overlapping block, rank chosen against a pure-noise null",
            consumes: &[Movie],
            produces: &[Movie],
            tiling: Some(TilingKind::Spatiotemporal),
            copies: 3.0,
            params: vec![
                p(
                    "block_px",
                    int(8, i64::MAX),
                    json!(32),
                    "edge of the square blocks, in pixels (a few cell diameters)",
                ),
                p(
                    "max_rank",
                    int(1, 1000),
                    json!(24),
                    "most components kept per block",
                ),
                p(
                    "confidence",
                    float(0.5, 0.9999),
                    json!(0.99),
                    "a component is kept when smoother than this fraction of the null's",
                ),
                p(
                    "consecutive_failures",
                    int(1, 100),
                    json!(3),
                    "the search in a block stops after this many rejections in a row",
                ),
                p(
                    "null_samples",
                    int(1, 10000),
                    json!(80),
                    "pure-noise blocks simulated for the null thresholds",
                ),
                p(
                    "power_iterations",
                    int(0, 20),
                    json!(2),
                    "power iterations of the randomized SVD",
                ),
                p(
                    "seed",
                    int(0, i64::MAX),
                    json!(0),
                    "seed of the random probes and of the null",
                ),
            ],
        },
        StageSpec {
            name: "summarize",
            summary: "mean, max, local-correlation and peak-to-noise images from statistics that add up across time chunks",
            consumes: &[Movie],
            produces: &[Summary],
            tiling: Some(TilingKind::Whole),
            copies: 2.0,
            params: vec![],
        },
        StageSpec {
            name: "detect",
            summary: "greedy seeding on local correlation x peak-to-noise of the band-passed movie, footprints grown by correlation",
            consumes: &[Movie],
            produces: &[Seeds],
            tiling: Some(TilingKind::Spatial),
            copies: 2.0,
            params: vec![
                p(
                    "radius_px",
                    auto(positive()),
                    Value::Null,
                    "expected soma radius in pixels (auto: 6 um over the pixel size, else 5 px)",
                ),
                p(
                    "min_corr",
                    float(-1.0, 1.0),
                    json!(0.6),
                    "minimum local correlation of a seed",
                ),
                p(
                    "min_pnr",
                    float(0.0, f64::INFINITY),
                    json!(6.0),
                    "minimum peak-to-noise ratio of a seed",
                ),
                p(
                    "pixel_corr",
                    float(-1.0, 1.0),
                    json!(0.4),
                    "pixels join a footprint when their trace correlates with the seed's above this",
                ),
                p(
                    "max_components",
                    int(0, i64::MAX),
                    json!(0),
                    "stop after this many components (0: no limit)",
                ),
                p(
                    "bin_frames",
                    auto(int(1, 1024)),
                    Value::Null,
                    "frames summed for the membership correlations (auto: 100 ms of frames)",
                ),
                p(
                    "morphology",
                    ParamType::Choice {
                        options: &["soma", "any"],
                    },
                    json!("soma"),
                    "shape prior: soma (within twice the radius) or any (dendrites, axons)",
                ),
                p(
                    "min_in_view",
                    float(0.0, 1.0),
                    json!(0.5),
                    "on a registered movie, seed only where the field was in view in this fraction of frames",
                ),
            ],
        },
        StageSpec {
            name: "demix",
            summary: "CNMF with HALS updates and a low-rank background, merging of correlated overlapping components, global trace refit",
            consumes: &[Movie, Seeds],
            produces: &[Rois, Traces],
            tiling: Some(TilingKind::Spatial),
            copies: 2.0,
            params: vec![
                p(
                    "iterations",
                    int(1, 100),
                    json!(4),
                    "outer HALS passes (temporal, spatial, background)",
                ),
                p(
                    "background_rank",
                    int(1, 8),
                    json!(2),
                    "rank of the background (1-2 for two-photon)",
                ),
                p(
                    "search_radius_px",
                    auto(positive()),
                    Value::Null,
                    "footprints may grow this far from their seed (auto: twice the radius)",
                ),
                p(
                    "merge_threshold",
                    float(-1.0, 1.0),
                    json!(0.8),
                    "merge overlapping components whose traces correlate above this",
                ),
            ],
        },
        StageSpec {
            name: "qc",
            summary: "component quality: trace SNR, spatial r-value and size, with accept/reject thresholds",
            consumes: &[Movie, Rois, Traces],
            produces: &[Qc],
            tiling: Some(TilingKind::Whole),
            copies: 2.0,
            params: vec![
                p(
                    "min_snr",
                    float(0.0, f64::INFINITY),
                    json!(3.0),
                    "minimum trace SNR (peak over PSD noise)",
                ),
                p(
                    "min_r_value",
                    float(-1.0, 1.0),
                    json!(0.7),
                    "minimum correlation of footprint and movie at the trace's peaks",
                ),
                p(
                    "min_r_value_partly_in_view",
                    float(-1.0, 1.0),
                    json!(0.85),
                    "the same for a footprint out of view in over 5% of the frames of a registered movie (rejects pieces of neuropil a moving field's edge cuts)",
                ),
                p(
                    "min_size_px",
                    auto(int(0, i64::MAX)),
                    Value::Null,
                    "smallest footprint (auto: a quarter of the soma's area)",
                ),
                p(
                    "max_size_px",
                    auto(int(0, i64::MAX)),
                    Value::Null,
                    "largest footprint (auto: three soma areas; none for morphology any)",
                ),
            ],
        },
        StageSpec {
            name: "deconvolve",
            summary: "OASIS spike inference (AR(1) or AR(2)), time constants and noise estimated from each trace",
            consumes: &[Traces],
            produces: &[Spikes],
            tiling: Some(TilingKind::Whole),
            copies: 1.0,
            params: vec![
                p(
                    "order",
                    int(1, 2),
                    json!(2),
                    "autoregressive order: 1 (decay) or 2 (rise and decay)",
                ),
                p(
                    "decay_s",
                    auto(positive()),
                    Value::Null,
                    "indicator decay time in seconds (auto: estimated from the trace)",
                ),
                p(
                    "rise_s",
                    auto(positive()),
                    Value::Null,
                    "AR(2) rise time in seconds (auto: estimated from the trace)",
                ),
                p(
                    "lambda",
                    auto(float(0.0, f64::INFINITY)),
                    Value::Null,
                    "sparsity penalty (auto: from the noise)",
                ),
                p(
                    "s_min",
                    float(0.0, f64::INFINITY),
                    json!(0.0),
                    "smallest spike kept (0: any positive)",
                ),
            ],
        },
    ]
}

/// The stage called `name`.
pub fn stage(name: &str) -> Option<StageSpec> {
    catalog().into_iter().find(|s| s.name == name)
}
