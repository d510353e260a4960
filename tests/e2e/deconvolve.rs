//! OASIS on real ground truth: CASCADE recordings (GCaMP6f and GCaMP6s, 60 Hz) with electrically
//! recorded spikes, scored by the correlation of spike rates in 100 ms bins.

use std::path::Path;

use tessera_kernels::deconv::{OasisParams, deconvolve};
use tessera_kernels::metrics::spike_rate_correlation;

use crate::common::shared_data;

/// Reads a 1-D little-endian float32 or float64 `.npy` file.
fn read_npy(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{} is not a .npy file",
        path.display()
    );
    let (header_len, offset) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[offset..offset + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let data = &bytes[offset + header_len..];
    if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    } else if header.contains("'<f8'") {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        panic!("unsupported dtype in {}: {header}", path.display());
    }
}

#[test]
fn oasis_spike_rates_correlate_with_electrophysiology() {
    let dir = shared_data().join("spike-ground-truth");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let mut by_indicator: std::collections::BTreeMap<(String, usize), Vec<f64>> =
        Default::default();
    for rec in index.as_array().unwrap() {
        let name = rec["recording"].as_str().unwrap();
        let rate = rec["frame_rate_hz"].as_f64().unwrap();
        let dff: Vec<f32> = read_npy(&dir.join(format!("{name}.dff.npy")))
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let time = read_npy(&dir.join(format!("{name}.time_s.npy")));
        let spike_times = read_npy(&dir.join(format!("{name}.spike_times_s.npy")));
        // True spikes per frame: each spike counts in the frame whose time is nearest.
        let mut truth = vec![0.0f32; dff.len()];
        for st in spike_times {
            let i = time.partition_point(|&t| t < st).min(time.len() - 1);
            let j = if i > 0 && (st - time[i - 1]).abs() < (time[i] - st).abs() {
                i - 1
            } else {
                i
            };
            truth[j] += 1.0;
        }
        // Recordings can hold NaN gaps: deconvolve the finite stretch only.
        if dff.iter().any(|v| !v.is_finite()) {
            continue;
        }
        for order in [1, 2] {
            let params = OasisParams {
                order,
                ..OasisParams::default()
            };
            let d = deconvolve(&dff, rate, &params).unwrap();
            let r = spike_rate_correlation(
                ndarray::ArrayView1::from(&truth),
                ndarray::ArrayView1::from(&d.spikes),
                rate,
                0.1,
            );
            by_indicator
                .entry((rec["indicator"].as_str().unwrap().to_string(), order))
                .or_default()
                .push(r);
        }
    }
    for ((indicator, order), mut rs) in by_indicator {
        rs.sort_by(f64::total_cmp);
        let median = rs[rs.len() / 2];
        eprintln!(
            "{indicator}, AR({order}): {} recordings, median spike-rate correlation {median:.3} (min {:.3}, max {:.3})",
            rs.len(),
            rs[0],
            rs[rs.len() - 1]
        );
        // Threshold written down in docs/ACCURACY.md: median >= 0.5 at 100 ms bins.
        assert!(
            median >= 0.5,
            "{indicator} AR({order}): median correlation {median}"
        );
    }
}
