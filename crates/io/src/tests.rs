//! Round trips through the writer and reader on the in-process memory store.

use ndarray::{Array3, s};
use tessera_core::{Box3, Dtype, Shape3};

use crate::{Output, Recording, RecordingWriter, Sample, WriteOptions};

fn roundtrip<T: Sample + PartialEq + std::fmt::Debug + ToF64>(name: &str, f: impl Fn(usize) -> T) {
    let uri = format!("memory://roundtrip-{name}");
    let shape = Shape3::new(23, 19, 31).unwrap();
    let data = Array3::from_shape_fn((23, 19, 31), |(t, y, x)| f(t * 1000 + y * 37 + x));
    let output = Output::create(&uri, true).unwrap();
    let options = WriteOptions {
        chunks: [5, 8, 16],
        ..WriteOptions::default()
    };
    let mut w = RecordingWriter::<T>::create(&output, shape, &options).unwrap();
    // Uneven appends exercise the chunk-row buffering.
    for (a, b) in [(0, 3), (3, 4), (4, 17), (17, 23)] {
        w.append(data.slice(s![a..b, .., ..])).unwrap();
    }
    w.finish().unwrap();
    output.finish().unwrap();
    let rec = Recording::open(&uri, None).unwrap();
    assert_eq!(rec.dtype(), T::DTYPE);
    assert_eq!(rec.chunks(), [5, 8, 16]);
    assert_eq!(rec.read_box_as::<T>(&shape.full_box()).unwrap(), data);
    // Unaligned boxes equal the same slice of the whole.
    for (t, y, x) in [
        (1..22, 3..18, 5..30),
        (4..6, 7..9, 15..17),
        (22..23, 0..19, 30..31),
    ] {
        let b = Box3::within(&shape, t.clone(), y.clone(), x.clone()).unwrap();
        let got = rec.read_box_as::<T>(&b).unwrap();
        let want = data.slice(s![
            t.start as usize..t.end as usize,
            y.start as usize..y.end as usize,
            x.start as usize..x.end as usize
        ]);
        assert_eq!(got, want, "{name} box {b}");
        // The f32 reads go a chunk row of frames at a time (boxes across 1-5 chunk rows here).
        let want_f32 = rec
            .read_box_as::<T>(&b)
            .unwrap()
            .mapv(|v| v.to_f64() as f32);
        assert_eq!(
            rec.read_box_f32(&b).unwrap(),
            want_f32,
            "{name} box {b} as f32"
        );
        let mut into = Array3::<f32>::from_elem(want_f32.dim(), f32::NAN);
        rec.read_box_f32_into(&b, into.view_mut()).unwrap();
        assert_eq!(into, want_f32, "{name} box {b} into an array");
    }
    // An array of another shape than the box is refused.
    let b = Box3::within(&shape, 0..2, 0..2, 0..2).unwrap();
    let err = rec
        .read_box_f32_into(&b, Array3::<f32>::zeros((2, 2, 3)).view_mut())
        .unwrap_err();
    assert!(err.to_string().contains("[2, 2, 2]"), "{err}");
}

/// The value a sample stands for, to compare f32 reads against.
trait ToF64 {
    fn to_f64(self) -> f64;
}

macro_rules! to_f64 {
    ($($t:ty),*) => {$(impl ToF64 for $t { fn to_f64(self) -> f64 { self as f64 } })*};
}
to_f64!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

#[test]
fn every_dtype_round_trips_through_memory() {
    roundtrip::<u8>("u8", |i| (i % 251) as u8);
    roundtrip::<u16>("u16", |i| (i % 65521) as u16);
    roundtrip::<u32>("u32", |i| i as u32 * 7);
    roundtrip::<u64>("u64", |i| i as u64 * 1_000_003);
    roundtrip::<i8>("i8", |i| (i % 200) as i8);
    roundtrip::<i16>("i16", |i| (i % 60000) as i16);
    roundtrip::<i32>("i32", |i| -(i as i32));
    roundtrip::<i64>("i64", |i| -(i as i64) * 3);
    roundtrip::<f32>("f32", |i| i as f32 * 0.25 - 9.0);
    roundtrip::<f64>("f64", |i| (i as f64).sqrt());
}

#[test]
fn f32_reads_convert_every_type() {
    let uri = "memory://f32-conversion";
    let shape = Shape3::new(4, 4, 4).unwrap();
    let data = Array3::from_shape_fn((4, 4, 4), |(t, y, x)| (t * 16 + y * 4 + x) as i16 - 30);
    let output = Output::create(uri, true).unwrap();
    let mut w = RecordingWriter::<i16>::create(&output, shape, &WriteOptions::default()).unwrap();
    w.append(data.view()).unwrap();
    w.finish().unwrap();
    output.finish().unwrap();
    let rec = Recording::open(uri, Some("movie")).unwrap();
    assert_eq!(rec.dtype(), Dtype::Int16);
    assert_eq!(
        rec.read_box_f32(&shape.full_box()).unwrap(),
        data.mapv(f32::from)
    );
    assert!(
        rec.read_box_f32(&Box3 {
            t: 0..5,
            y: 0..4,
            x: 0..4
        })
        .is_err()
    );
}

#[test]
fn unfinished_recordings_are_refused_and_existing_outputs_protected() {
    let uri = "memory://unfinished";
    let shape = Shape3::new(10, 4, 4).unwrap();
    let output = Output::create(uri, true).unwrap();
    let mut w = RecordingWriter::<u16>::create(&output, shape, &WriteOptions::default()).unwrap();
    w.append(Array3::<u16>::zeros((4, 4, 4)).view()).unwrap();
    // Too few frames: finish refuses, and the array stays marked incomplete.
    assert!(w.finish().is_err());
    drop(output);
    let e = Recording::open(uri, None).unwrap_err().to_string();
    assert!(e.contains("incomplete"), "{e}");
    // An existing output is not replaced without overwrite.
    let e = Output::create(uri, false).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn appending_beyond_the_shape_or_with_wrong_frames_fails() {
    let output = Output::create("memory://overflow", true).unwrap();
    let shape = Shape3::new(3, 4, 4).unwrap();
    let mut w = RecordingWriter::<u8>::create(&output, shape, &WriteOptions::default()).unwrap();
    assert!(w.append(Array3::<u8>::zeros((4, 4, 4)).view()).is_err());
    assert!(w.append(Array3::<u8>::zeros((1, 5, 4)).view()).is_err());
}

#[test]
fn object_store_outputs_are_incomplete_until_finished() {
    let uri = "memory://interrupted";
    let shape = Shape3::new(4, 4, 4).unwrap();
    let output = Output::create(uri, true).unwrap();
    let mut w = RecordingWriter::<u16>::create(&output, shape, &WriteOptions::default()).unwrap();
    w.append(Array3::<u16>::zeros((4, 4, 4)).view()).unwrap();
    // The recording itself is complete, but the output as a whole is not: an interrupted run.
    w.finish().unwrap();
    output
        .write_array(
            "extra",
            &ndarray::Array1::<f32>::zeros(3).into_dyn(),
            &["i"],
            serde_json::Map::new(),
        )
        .unwrap();
    drop(output);
    let e = Recording::open(uri, None).unwrap_err().to_string();
    assert!(e.contains("incomplete"), "{e}");
    let store = crate::Store::open(&crate::Location::parse(uri).unwrap()).unwrap();
    assert!(
        store
            .read_array::<f32>("extra")
            .unwrap_err()
            .to_string()
            .contains("incomplete")
    );
    // Finishing marks it complete.
    let output = Output::create(uri, true).unwrap();
    let mut w = RecordingWriter::<u16>::create(&output, shape, &WriteOptions::default()).unwrap();
    w.append(Array3::<u16>::zeros((4, 4, 4)).view()).unwrap();
    w.finish().unwrap();
    output.finish().unwrap();
    assert!(Recording::open(uri, None).is_ok());
}
