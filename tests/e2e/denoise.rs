//! `tessera denoise` on a registered simulation: noise drops, the output is a complete float32
//! recording of the same shape that `extract` can read, and the registration's shifts travel along.

use tessera_io::{Location, Recording, Store};

use crate::common::{fails, ok};

#[test]
fn denoising_a_registered_simulation_cuts_the_noise_and_keeps_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--preset",
        "low-snr",
        "--frames",
        "400",
        "--height",
        "80",
        "--width",
        "96",
        "--seed",
        "3",
        "--chunks",
        "100,80,96",
        "--out",
        &p("sim.zarr"),
    ]);
    ok(&["register", &p("sim.zarr"), "--out", &p("reg.zarr")]);
    // Two segments of 200 frames, to exercise the streaming.
    let stdout = ok(&[
        "denoise",
        &p("reg.zarr"),
        "--out",
        &p("dn.zarr"),
        "--chunk-frames",
        "200",
    ]);
    assert!(stdout.contains("denoised 400 frames of 80x96"), "{stdout}");
    assert!(stdout.contains("(2 segment(s))"), "{stdout}");

    let rec = Recording::open(&p("dn.zarr"), None).unwrap();
    assert_eq!((rec.shape().t, rec.shape().y, rec.shape().x), (400, 80, 96));
    assert_eq!(rec.dtype(), tessera_core::Dtype::Float32);
    let store = Store::open(&Location::parse(&p("dn.zarr")).unwrap()).unwrap();
    let attrs = store.attributes("denoise").unwrap().expect("denoise group");
    let segments = attrs["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    for s in segments {
        let (before, after) = (
            s["noise_before"].as_f64().unwrap(),
            s["noise_after"].as_f64().unwrap(),
        );
        // Threshold: at least a 3-fold drop of the median per-pixel noise (measured ~10-20x).
        assert!(after < before / 3.0, "{s}");
        assert!(s["compression_ratio"].as_f64().unwrap() > 5.0, "{s}");
    }
    let ranks = store.read_array::<u16>("denoise/ranks").unwrap();
    assert_eq!(ranks.shape()[0], 2);
    assert!(ranks.iter().any(|&r| r > 0), "no block kept a component");
    let shifts = store.read_array::<f32>("registration/shifts").unwrap();
    assert_eq!(shifts.shape(), &[400, 2]);

    // The denoised movie is a recording like any other.
    ok(&["extract", &p("dn.zarr"), "--out", &p("rois.zarr")]);
}

#[test]
fn denoise_refuses_too_short_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(&[
        "simulate",
        "--frames",
        "10",
        "--height",
        "32",
        "--width",
        "32",
        "--out",
        &p("s.zarr"),
    ]);
    let e = fails(&["denoise", &p("s.zarr"), "--out", &p("d.zarr")]);
    assert!(
        e.contains("has 10 frames; denoising needs at least 16"),
        "{e}"
    );
    assert!(!std::path::Path::new(&p("d.zarr")).exists());
}
