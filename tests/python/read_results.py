"""Read a tessera run's results with zarr and numpy alone, and reproduce its dF/F traces from the
stored footprints, traces and background (the snippet in docs/FORMATS.md, "Reading a run's
results from Python"). Prints a JSON summary; exits 1 if the reproduction disagrees.

Usage: read_results.py RUN_DIR
"""
import json
import sys

import numpy as np
import zarr

run = zarr.open_group(sys.argv[1], mode="r")
meta = run.attrs["tessera"]
assert meta["status"] == "complete", "an unfinished run: its results are not all there"
rois = run["rois"]
C = rois["traces"][:]                              # (cells, t) demixed fluorescence
dff = rois["dff"][:]                               # (cells, t) dF/F
spikes = rois["spikes"][:]                         # (cells, t) inferred spike amplitudes
accepted = rois["accepted"][:].astype(bool)        # (cells,) QC decision
qc = json.load(open(f"{sys.argv[1]}/rois/qc.json"))   # per cell: snr, r_value, size_px, ...
fp = rois["footprints"]
frames, height, width = meta["shape"]
A = np.zeros((C.shape[0], height * width), np.float32)   # dense footprints, one row per cell
A[fp["cell"][:], fp["pixel"][:]] = fp["weight"][:]
B, f = rois["background/b"][:], rois["background/f"][:]  # (pixels, k) and (k, t)
shifts = run["registration/shifts"][:] if "registration" in run else None  # (t, 2): dy, dx

# F = C + (a^T B / sum a) f: each cell's trace plus the background under its footprint (stored
# as rois/fluorescence); dF/F is F against its 8th percentile over a centred 30 s window.
F = C + (A @ B / A.sum(axis=1, keepdims=True)) @ f
stored_F = rois["fluorescence"][:]
F_error = float((np.abs(F - stored_F) / np.maximum(1, np.abs(stored_F))).max()) if F.size else 0.0
rate = meta["frame_rate_hz"]
window = min(F.shape[1], max(1, round(30 * rate)))  # the whole trace if shorter
if window == F.shape[1]:
    F0 = np.sort(F, axis=1)[:, [round((window - 1) * 8 / 100)]]
    reproduced = np.where(F0 > 0, (F - F0) / np.where(F0 > 0, F0, 1), 0)
    worst = float(np.abs(reproduced - dff).max()) if dff.size else 0.0
else:
    worst = None  # a running baseline: compare in the e2e test on a short recording only

print(json.dumps({
    "cells": int(C.shape[0]), "accepted": int(accepted.sum()), "frames": int(C.shape[1]),
    "qc_cells": len(qc), "footprint_pixels": int((A > 0).sum()),
    "traces_sum": float(C.astype(np.float64).sum()), "spikes_sum": float(spikes.astype(np.float64).sum()),
    "shift_frames": None if shifts is None else int(shifts.shape[0]),
    "dff_max_abs_error": worst, "fluorescence_max_rel_error": F_error,
}))
if F_error > 1e-4:
    sys.exit(f"fluorescence not reproduced: max relative error {F_error}")
if worst is not None and worst > 1e-4:
    sys.exit(f"dF/F not reproduced: max |error| {worst}")
