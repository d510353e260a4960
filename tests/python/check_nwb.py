"""Open an NWB file tessera exported with pynwb, compare it with the run's results store (read
with zarr), and run nwbinspector with the DANDI configuration. Prints a JSON summary; exits 1
on any disagreement or on any nwbinspector message at CRITICAL or BEST_PRACTICE_VIOLATION level
(or a pynwb validation error).

Usage: check_nwb.py FILE.nwb RUN_DIR [RECORDING_DIR]

With RECORDING_DIR (a Zarr group with a `movie` array), the file's TwoPhotonSeries must hold that
movie exactly.
"""
import json
import sys

import numpy as np
import zarr
from nwbinspector import Importance, inspect_nwbfile, load_config
from pynwb import NWBHDF5IO

path, run_dir = sys.argv[1:3]
recording = sys.argv[3] if len(sys.argv) > 3 else None
run = zarr.open_group(run_dir, mode="r")
rois = run["rois"]
problems = []


def same(name, got, want, tol=0.0):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        problems.append(f"{name}: shape {got.shape}, expected {want.shape}")
    elif not np.allclose(got, want, rtol=tol, atol=tol, equal_nan=True):
        problems.append(f"{name}: values differ (max {np.nanmax(np.abs(got - want))})")


with NWBHDF5IO(path, "r") as io:
    nwb = io.read()
    ophys = nwb.processing["ophys"]
    table = ophys["ImageSegmentation"]["PlaneSegmentation"]
    k = len(table)
    width = run.attrs["tessera"]["shape"][2]
    fp = rois["footprints"]
    cell, pixel, weight = fp["cell"][:], fp["pixel"][:], fp["weight"][:]
    for i in range(k):
        want = sorted((int(p % width), int(p // width), float(w))
                      for c, p, w in zip(cell, pixel, weight) if c == i)
        got = sorted((int(x), int(y), float(w)) for x, y, w in table["pixel_mask"][i])
        if got != want:
            problems.append(f"pixel_mask of ROI {i} differs from rois/footprints")
    same("accepted", table["accepted"][:], rois["accepted"][:].astype(bool))
    fluorescence = ophys["Fluorescence"]["RoiResponseSeries"]
    same("Fluorescence", fluorescence.data[:], rois["fluorescence"][:].T)
    same("Deconvolved", ophys["Fluorescence"]["Deconvolved"].data[:], rois["spikes"][:].T)
    dff = ophys["DfOverF"]["RoiResponseSeries"]
    same("DfOverF", dff.data[:], rois["dff"][:].T)
    same("rois", dff.rois.data[:], np.arange(k))
    if dff.rois.table is not table:
        problems.append("DfOverF rois do not point at the PlaneSegmentation")
    rate = run.attrs["tessera"]["frame_rate_hz"]
    if abs(fluorescence.rate - rate) > 1e-6 or abs(nwb.imaging_planes["ImagingPlane"].imaging_rate - rate) > 1e-6:
        problems.append(f"rate {fluorescence.rate}, expected {rate}")
    for name in ("mean", "correlation", "pnr"):
        same(f"SummaryImages/{name}", ophys["SummaryImages"][name].data[:], run[f"summary/{name}"][:])
    same("RegistrationShifts", ophys["RegistrationShifts"].data[:], run["registration/shifts"][:])
    if recording is not None:
        series = nwb.acquisition["TwoPhotonSeries"]
        movie = zarr.open_group(recording, mode="r")["movie"]
        raw = series.data[:]
        if raw.dtype != movie.dtype or not np.array_equal(raw, movie[:]):
            problems.append(f"TwoPhotonSeries differs from {recording}/movie ({raw.dtype}, {raw.shape})")
        if series.imaging_plane is not nwb.imaging_planes["ImagingPlane"] or abs(series.rate - rate) > 1e-6:
            problems.append("TwoPhotonSeries: wrong imaging plane or rate")
    provenance = json.loads(nwb.source_script)
    summary = {
        "rois": k, "frames": int(dff.data.shape[0]), "identifier": nwb.identifier,
        "session_start_time": nwb.session_start_time.isoformat(),
        "subject_id": nwb.subject.subject_id if nwb.subject else None,
        "run_id": provenance.get("run_id"),
        "description": ophys.description,
    }

config = load_config(filepath_or_keyword="dandi")
messages = list(inspect_nwbfile(nwbfile_path=path, config=config))
serious = [m for m in messages if m.importance.value >= Importance.BEST_PRACTICE_VIOLATION.value]
summary["inspector"] = sorted({f"{m.importance.name}: {m.check_function_name}" for m in messages})
for m in serious:
    problems.append(f"nwbinspector {m.importance.name}: {m.check_function_name}: {m.message}")
summary["problems"] = problems
print(json.dumps(summary))
if problems:
    sys.exit(1)
