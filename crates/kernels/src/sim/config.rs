//! Simulation parameters and the presets that span lab diversity.

use serde::{Deserialize, Serialize};

use crate::KernelError;

/// Calcium-indicator kinetics: a spike adds `dff_per_spike * h(t)` to the cell's dF/F, with
/// `h(t) = (exp(-t/decay_s) - exp(-t/rise_s)) / peak` (difference of exponentials, peak 1),
/// then a saturating nonlinearity `dff = c / (1 + c / saturation_dff)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    pub name: String,
    pub rise_s: f64,
    pub decay_s: f64,
    pub dff_per_spike: f64,
    pub saturation_dff: f64,
}

impl Indicator {
    /// Kinetics from Chen et al. 2013 (GCaMP6), Dana et al. 2019 (jGCaMP7) and Zhang et al. 2023
    /// (jGCaMP8), rounded: single-spike amplitude and rise/decay time constants.
    pub fn named(name: &str) -> Result<Indicator, KernelError> {
        let (rise_s, decay_s, dff_per_spike) = match name.to_ascii_lowercase().as_str() {
            "gcamp6s" => (0.18, 1.2, 0.25),
            "gcamp6m" => (0.1, 0.8, 0.15),
            "gcamp6f" => (0.05, 0.4, 0.12),
            "jgcamp7f" => (0.04, 0.3, 0.2),
            "jgcamp8m" => (0.01, 0.25, 0.3),
            "jgcamp8f" => (0.005, 0.1, 0.3),
            _ => {
                return Err(KernelError::InvalidParameter {
                    name: "indicator",
                    reason: format!(
                        "unknown indicator '{name}' (known: GCaMP6s, GCaMP6m, GCaMP6f, jGCaMP7f, jGCaMP8m, jGCaMP8f)"
                    ),
                });
            }
        };
        Ok(Indicator {
            name: name.to_string(),
            rise_s,
            decay_s,
            dff_per_spike,
            saturation_dff: 8.0,
        })
    }
}

/// Everything that defines a simulated recording. The same config and seed give the same movie,
/// bit for bit, on every machine and with any number of threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Preset the config started from (informational).
    pub preset: String,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub frame_rate_hz: f64,
    /// Edge of one pixel in micrometres.
    pub pixel_size_um: f64,
    pub seed: u64,

    /// Somata per square millimetre of imaging plane.
    pub cell_density_per_mm2: f64,
    /// Median soma radius (micrometres) and its coefficient of variation.
    pub soma_radius_um: f64,
    pub soma_radius_cv: f64,
    /// Largest elongation of the soma ellipse (ratio of axes, >= 1).
    pub max_elongation: f64,
    /// Fraction of the smaller radius by which two somata may overlap in projection (0: none).
    pub max_overlap: f64,
    /// Depth of the nuclear shadow (0: filled soma, 1: black nucleus).
    pub nucleus_depth: f64,
    /// Fraction of cells that never fire.
    pub silent_fraction: f64,
    /// Dendritic segments per square millimetre (0: somata only): thin, curved processes with
    /// activity of their own, the non-compact shapes a detector without a soma prior must find.
    #[serde(default)]
    pub dendrite_density_per_mm2: f64,
    /// Length of each segment (micrometres) along its path.
    #[serde(default = "default_dendrite_length_um")]
    pub dendrite_length_um: f64,
    /// Width of each segment (micrometres): the Gaussian cross-section has sigma = width / 2.
    #[serde(default = "default_dendrite_width_um")]
    pub dendrite_width_um: f64,

    /// Median firing rate (Hz) of active cells and the log-normal spread across cells.
    pub rate_hz_median: f64,
    pub rate_log_sigma: f64,
    /// Probability that a spike starts a burst, and the mean number of extra spikes in a burst.
    pub burst_probability: f64,
    pub burst_extra_spikes: f64,
    /// Strength (0..1) of a slow, shared modulation of firing rates (stimulus-locked activity).
    pub shared_modulation: f64,
    pub indicator: Indicator,

    /// Expected photons per pixel per frame at the brightest pixel of a resting cell (median).
    pub cell_photons: f64,
    /// Expected photons per pixel per frame of the neuropil and of the static background.
    pub neuropil_photons: f64,
    pub background_photons: f64,
    /// Relative amplitude and time constant (s) of the slow neuropil fluctuations, and their rank.
    pub neuropil_fluctuation: f64,
    pub neuropil_timescale_s: f64,
    pub neuropil_rank: usize,
    /// Detector gain (ADU per photon), read noise (ADU, Gaussian) and offset (ADU).
    pub gain_adu_per_photon: f64,
    pub read_noise_adu: f64,
    pub offset_adu: f64,

    /// Root-mean-square rigid motion in pixels (0: none), its time constant (s), and the
    /// probability per frame of a sudden jump of up to `motion_jump_px`.
    pub motion_rms_px: f64,
    pub motion_timescale_s: f64,
    pub motion_jump_probability: f64,
    pub motion_jump_px: f64,
}

fn default_dendrite_length_um() -> f64 {
    150.0
}

fn default_dendrite_width_um() -> f64 {
    2.0
}

/// The names of the built-in presets.
pub const PRESETS: [&str; 8] = [
    "base",
    "low-snr",
    "dense",
    "small-cells",
    "large-motion",
    "fast",
    "endoscope",
    "dendrites",
];

impl SimConfig {
    /// A preset by name (see [`PRESETS`]); shape and seed can be changed afterwards.
    ///
    /// - `base`: two-photon, GCaMP6s, 30 Hz, 1 um pixels, somata of radius ~6 um, ~800 cells/mm^2,
    ///   moderate noise, small motion;
    /// - `low-snr`: a quarter of the photons and twice the read noise;
    /// - `dense`: 2.5x the density with overlapping somata;
    /// - `small-cells`: radius ~4 um at 1.5 um pixels (somata of ~2.7 px);
    /// - `large-motion`: rms motion of 4 px with sudden jumps of up to 12 px;
    /// - `fast`: jGCaMP8f at 100 Hz, fewer photons per frame;
    /// - `endoscope`: one-photon-like: strong, blurred, fluctuating background, GCaMP6f, 20 Hz;
    /// - `dendrites`: half the somata of `base` plus ~60 dendritic segments per mm^2 (150 um long,
    ///   2 um wide, curved), each with its own activity.
    pub fn preset(name: &str) -> Result<SimConfig, KernelError> {
        let mut c = SimConfig {
            preset: name.to_string(),
            frames: 1500,
            height: 512,
            width: 512,
            frame_rate_hz: 30.0,
            pixel_size_um: 1.0,
            seed: 0,
            cell_density_per_mm2: 800.0,
            soma_radius_um: 6.0,
            soma_radius_cv: 0.15,
            max_elongation: 1.5,
            max_overlap: 0.15,
            nucleus_depth: 0.5,
            silent_fraction: 0.2,
            dendrite_density_per_mm2: 0.0,
            dendrite_length_um: default_dendrite_length_um(),
            dendrite_width_um: default_dendrite_width_um(),
            rate_hz_median: 0.4,
            rate_log_sigma: 0.8,
            burst_probability: 0.15,
            burst_extra_spikes: 2.0,
            shared_modulation: 0.3,
            indicator: Indicator::named("GCaMP6s")?,
            cell_photons: 20.0,
            neuropil_photons: 6.0,
            background_photons: 2.0,
            neuropil_fluctuation: 0.3,
            neuropil_timescale_s: 5.0,
            neuropil_rank: 3,
            gain_adu_per_photon: 20.0,
            read_noise_adu: 20.0,
            offset_adu: 200.0,
            motion_rms_px: 0.7,
            motion_timescale_s: 1.0,
            motion_jump_probability: 0.0,
            motion_jump_px: 0.0,
        };
        match name {
            "base" => {}
            "low-snr" => {
                c.cell_photons *= 0.25;
                c.neuropil_photons *= 0.25;
                c.background_photons *= 0.25;
                c.read_noise_adu *= 2.0;
            }
            "dense" => {
                c.cell_density_per_mm2 = 2000.0;
                c.max_overlap = 0.35;
            }
            "small-cells" => {
                c.soma_radius_um = 4.0;
                c.pixel_size_um = 1.5;
                c.cell_density_per_mm2 = 1200.0;
            }
            "large-motion" => {
                c.motion_rms_px = 4.0;
                c.motion_jump_probability = 0.002;
                c.motion_jump_px = 12.0;
            }
            "fast" => {
                c.frame_rate_hz = 100.0;
                c.indicator = Indicator::named("jGCaMP8f")?;
                c.cell_photons = 8.0;
                c.neuropil_photons = 2.5;
                c.background_photons = 1.0;
                c.rate_hz_median = 1.0;
                c.motion_timescale_s = 0.5;
            }
            "endoscope" => {
                c.frame_rate_hz = 20.0;
                c.pixel_size_um = 2.0;
                c.indicator = Indicator::named("GCaMP6f")?;
                c.neuropil_photons = 60.0;
                c.background_photons = 40.0;
                c.cell_photons = 40.0;
                c.neuropil_fluctuation = 0.5;
                c.neuropil_timescale_s = 3.0;
                c.nucleus_depth = 0.0;
                c.soma_radius_um = 7.0;
            }
            "dendrites" => {
                c.cell_density_per_mm2 = 400.0;
                c.dendrite_density_per_mm2 = 60.0;
            }
            _ => {
                return Err(KernelError::InvalidParameter {
                    name: "preset",
                    reason: format!("unknown preset '{name}' (known: {})", PRESETS.join(", ")),
                });
            }
        }
        Ok(c)
    }

    /// Checks every parameter's range, naming the first one out of range.
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |name: &'static str, reason: String| {
            Err(KernelError::InvalidParameter { name, reason })
        };
        if self.frames == 0 || self.height < 8 || self.width < 8 {
            return bad(
                "shape",
                format!(
                    "need at least 1 frame and 8x8 pixels, got {}x{}x{}",
                    self.frames, self.height, self.width
                ),
            );
        }
        let positive: [(&'static str, f64); 10] = [
            ("dendrite_length_um", self.dendrite_length_um),
            ("dendrite_width_um", self.dendrite_width_um),
            ("frame_rate_hz", self.frame_rate_hz),
            ("pixel_size_um", self.pixel_size_um),
            ("soma_radius_um", self.soma_radius_um),
            ("gain_adu_per_photon", self.gain_adu_per_photon),
            ("neuropil_timescale_s", self.neuropil_timescale_s),
            ("motion_timescale_s", self.motion_timescale_s),
            ("rise_s", self.indicator.rise_s),
            ("decay_s", self.indicator.decay_s),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("must be a positive number, got {v}"));
            }
        }
        let non_negative: [(&'static str, f64); 15] = [
            ("cell_density_per_mm2", self.cell_density_per_mm2),
            ("dendrite_density_per_mm2", self.dendrite_density_per_mm2),
            ("soma_radius_cv", self.soma_radius_cv),
            ("rate_hz_median", self.rate_hz_median),
            ("rate_log_sigma", self.rate_log_sigma),
            ("burst_extra_spikes", self.burst_extra_spikes),
            ("cell_photons", self.cell_photons),
            ("neuropil_photons", self.neuropil_photons),
            ("background_photons", self.background_photons),
            ("neuropil_fluctuation", self.neuropil_fluctuation),
            ("read_noise_adu", self.read_noise_adu),
            ("offset_adu", self.offset_adu),
            ("motion_rms_px", self.motion_rms_px),
            ("motion_jump_px", self.motion_jump_px),
            ("dff_per_spike", self.indicator.dff_per_spike),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, format!("must be a non-negative number, got {v}"));
            }
        }
        let fractions: [(&'static str, f64); 6] = [
            ("max_overlap", self.max_overlap),
            ("nucleus_depth", self.nucleus_depth),
            ("silent_fraction", self.silent_fraction),
            ("burst_probability", self.burst_probability),
            ("shared_modulation", self.shared_modulation),
            ("motion_jump_probability", self.motion_jump_probability),
        ];
        for (name, v) in fractions {
            if !(0.0..=1.0).contains(&v) {
                return bad(name, format!("must lie in [0, 1], got {v}"));
            }
        }
        if !(self.max_elongation >= 1.0 && self.max_elongation.is_finite()) {
            return bad(
                "max_elongation",
                format!("must be >= 1, got {}", self.max_elongation),
            );
        }
        if self.indicator.rise_s >= self.indicator.decay_s {
            return bad(
                "rise_s",
                format!(
                    "rise time {} s must be shorter than decay time {} s",
                    self.indicator.rise_s, self.indicator.decay_s
                ),
            );
        }
        if self.indicator.saturation_dff.is_nan() || self.indicator.saturation_dff <= 0.0 {
            return bad("saturation_dff", "must be positive".to_string());
        }
        if self.neuropil_rank > 16 {
            return bad(
                "neuropil_rank",
                format!("must be at most 16, got {}", self.neuropil_rank),
            );
        }
        // Bounds that keep memory finite: the simulated canvas (field plus motion margin) and the
        // number of somata it can hold.
        let margin = self.margin_px() as u128;
        let canvas = (self.height as u128 + 2 * margin) * (self.width as u128 + 2 * margin);
        if canvas > 1 << 28 {
            return bad(
                "shape",
                format!(
                    "the simulated canvas ({}x{} plus a motion margin of {margin} px) exceeds 2^28 pixels: reduce the field or the motion",
                    self.height, self.width
                ),
            );
        }
        if self.motion_rms_px > 100.0 || self.motion_jump_px > 200.0 {
            return bad(
                "motion_rms_px",
                "motion above 100 px rms or jumps above 200 px are not supported".to_string(),
            );
        }
        let area_per_cell_um2 = std::f64::consts::PI * (0.5 * self.soma_radius_um).powi(2);
        if self.cell_density_per_mm2 > 1e6 / area_per_cell_um2 {
            return bad(
                "cell_density_per_mm2",
                format!(
                    "{} cells/mm^2 cannot fit somata of radius {} um (at most {:.0})",
                    self.cell_density_per_mm2,
                    self.soma_radius_um,
                    1e6 / area_per_cell_um2
                ),
            );
        }
        if self.soma_radius_um / self.pixel_size_um > 64.0 {
            return bad(
                "soma_radius_um",
                "somata wider than 64 pixels are not supported".to_string(),
            );
        }
        Ok(())
    }

    /// Soma radius in pixels.
    pub fn soma_radius_px(&self) -> f64 {
        self.soma_radius_um / self.pixel_size_um
    }

    /// Margin (px) around the field of view in which the scene is also simulated, so that motion
    /// brings real content into view instead of empty borders.
    pub fn margin_px(&self) -> usize {
        let motion = 4.0 * self.motion_rms_px + self.motion_jump_px;
        (motion.ceil() as usize) + (2.0 * self.soma_radius_px()).ceil() as usize + 2
    }
}
