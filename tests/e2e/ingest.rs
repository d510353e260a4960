//! Ingest of real and tifffile-written TIFFs: the same pixels as tifffile reads.

use tessera_io::Recording;

use crate::common::{ok, python, shared_data};

#[test]
fn neurofinder_folder_ingests_with_the_same_pixels_as_tifffile() {
    let src = shared_data().join("neurofinder.01.01/images");
    assert!(src.is_dir(), "missing {}", src.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nf.zarr");
    let stdout = ok(&[
        "ingest",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("ingested 101 frames of 512x512 uint16"),
        "{stdout}"
    );
    // info.json one level up gives the frame rate and pixel size.
    assert!(stdout.contains("7.5 Hz"), "{stdout}");
    let rec = Recording::open(out.to_str().unwrap(), None).unwrap();
    assert_eq!(rec.shape().to_array(), [101, 512, 512]);
    assert_eq!(rec.meta().frame_rate_hz, Some(7.5));
    assert_eq!(rec.meta().pixel_size_um, Some(1.25));
    assert_eq!(rec.meta().indicator.as_deref(), Some("GCaMP6s"));
    // Every frame equals tifffile's reading of the corresponding file.
    for (i, t) in [(0usize, 0u64), (57, 57), (100, 100)] {
        let tif = src.join(format!("image{i:05}.tiff"));
        let b = tessera_core::Box3::within(&rec.shape(), t..t + 1, 0..512, 0..512).unwrap();
        let frame = rec.read_box_as::<u16>(&b).unwrap();
        let raw = dir.path().join(format!("frame{i}.raw"));
        std::fs::write(
            &raw,
            frame
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        python(
            "compare_frame.py",
            &[tif.to_str().unwrap(), raw.to_str().unwrap()],
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", out.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(inspect["metadata"]["frame_rate_hz"], 7.5);
    assert!(inspect["stats"]["noise_median"].as_f64().unwrap() > 0.0);
}

#[test]
fn tifffile_multipage_bigtiff_and_float_ingest_identically() {
    let dir = tempfile::tempdir().unwrap();
    python("write_tiffs.py", &[dir.path().to_str().unwrap()]);
    for (name, dtype) in [
        ("multipage", "uint16"),
        ("bigtiff", "int16"),
        ("float", "float32"),
    ] {
        let src = dir.path().join(format!("{name}.tif"));
        let out = dir.path().join(format!("{name}.zarr"));
        let stdout = ok(&[
            "ingest",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--chunks",
            "4,16,16",
        ]);
        assert!(stdout.contains(dtype), "{name}: {stdout}");
        let v: serde_json::Value = serde_json::from_str(&python(
            "read_tessera_output.py",
            &[
                "tiff",
                out.to_str().unwrap(),
                "movie",
                src.to_str().unwrap(),
            ],
        ))
        .unwrap();
        assert_eq!(v["equal"], true);
        if name == "multipage" {
            let rec = Recording::open(out.to_str().unwrap(), None).unwrap();
            let rate = rec.meta().frame_rate_hz.unwrap();
            assert!(
                (rate - 30.0).abs() < 1e-6,
                "ImageJ finterval gives 30 Hz, got {rate}"
            );
            let px = rec.meta().pixel_size_um.unwrap();
            assert!(
                (px - 0.8).abs() < 1e-3,
                "ImageJ resolution gives 0.8 um, got {px}"
            );
        }
    }
}
