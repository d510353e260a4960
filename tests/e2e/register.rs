//! `tessera register` on simulated motion: shifts match the ground truth, and the output is complete.

use ndarray::Ix2;
use tessera_io::{Location, Recording, Store};

use crate::common::ok;

#[test]
fn registration_recovers_simulated_motion() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    let reg = dir.path().join("reg.zarr");
    ok(&[
        "simulate",
        "--preset",
        "large-motion",
        "--frames",
        "200",
        "--height",
        "96",
        "--width",
        "112",
        "--seed",
        "8",
        "--chunks",
        "32,64,64",
        "--out",
        sim.to_str().unwrap(),
    ]);
    // The large-motion preset wanders +-20 px around wherever the template lands: search 30 px.
    let stdout = ok(&[
        "register",
        sim.to_str().unwrap(),
        "--out",
        reg.to_str().unwrap(),
        "--max-shift",
        "30",
    ]);
    assert!(
        stdout.contains("registered 200 frames of 96x112")
            && stdout.contains(" 0 frame(s) at the 30 px limit"),
        "{stdout}"
    );
    // With a 3 px limit the frames beyond it are reported, not silently mis-registered.
    let small = dir.path().join("small.zarr");
    let out = crate::common::run(&[
        "register",
        sim.to_str().unwrap(),
        "--out",
        small.to_str().unwrap(),
        "--max-shift",
        "3",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hit the shift limit"), "{err}");
    let truth = Store::open(&Location::parse(sim.to_str().unwrap()).unwrap()).unwrap();
    let truth = truth
        .read_array::<f32>("ground_truth/motion")
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap();
    let out = Store::open(&Location::parse(reg.to_str().unwrap()).unwrap()).unwrap();
    let est = out
        .read_array::<f32>("registration/shifts")
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap();
    assert_eq!(est.dim(), (200, 2));
    for axis in 0..2 {
        let d: Vec<f64> = (0..200)
            .map(|t| f64::from(est[[t, axis]] - truth[[t, axis]]))
            .collect();
        let mean = d.iter().sum::<f64>() / 200.0;
        let rms = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 200.0).sqrt();
        // The target, 0.2 px (measured 0.184 px on rows and 0.058 px on columns).
        assert!(rms < 0.2, "axis {axis}: residual {rms} px");
        // The registered frame is the recording's own: the template sits at the median position,
        // as the simulator's reference frame does, so no constant offset remains.
        let mut sorted = d.clone();
        sorted.sort_by(f64::total_cmp);
        let median = 0.5 * (sorted[99] + sorted[100]);
        assert!(median.abs() < 0.3, "axis {axis}: offset {median} px");
    }
    // The registered movie is complete, has the input's type, and is steadier: frame-to-frame
    // differences shrink once motion is removed.
    let before = Recording::open(sim.to_str().unwrap(), None).unwrap();
    let after = Recording::open(reg.to_str().unwrap(), None).unwrap();
    assert_eq!(after.dtype(), before.dtype());
    let b = before.read_box_f32(&before.shape().full_box()).unwrap();
    let a = after.read_box_f32(&after.shape().full_box()).unwrap();
    let roughness = |m: &ndarray::Array3<f32>| -> f64 {
        let mean = m.mean_axis(ndarray::Axis(0)).unwrap();
        m.outer_iter()
            .map(|f| (&f - &mean).mapv(|v| f64::from(v).powi(2)).sum())
            .sum::<f64>()
    };
    assert!(
        roughness(&a) < 0.8 * roughness(&b),
        "registration did not steady the movie"
    );
}

#[test]
fn piecewise_registration_of_rigid_motion_leaves_blocks_still() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.zarr");
    let reg = dir.path().join("reg.zarr");
    ok(&[
        "simulate",
        "--preset",
        "base",
        "--motion-px",
        "2",
        "--frames",
        "96",
        "--height",
        "96",
        "--width",
        "112",
        "--seed",
        "3",
        "--chunks",
        "32,64,64",
        "--out",
        sim.to_str().unwrap(),
    ]);
    ok(&[
        "register",
        sim.to_str().unwrap(),
        "--out",
        reg.to_str().unwrap(),
        "--piecewise",
        "--block-px",
        "64",
    ]);
    let out = Store::open(&Location::parse(reg.to_str().unwrap()).unwrap()).unwrap();
    let blocks = out.read_array::<f32>("registration/block_shifts").unwrap();
    assert_eq!(blocks.shape(), &[96, 2, 3, 2]);
    // The motion is rigid: once the rigid shift is removed, blocks barely move.
    let rms =
        (blocks.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / blocks.len() as f64).sqrt();
    assert!(rms < 0.5, "residual block shifts rms {rms} px");
    let after = Recording::open(reg.to_str().unwrap(), None).unwrap();
    assert_eq!(after.shape().to_array(), [96, 96, 112]);
}
