#!/usr/bin/env python3
"""Helpers for scripts/compare_suite2p.sh: Suite2p side by side with tessera.

Not part of CI. Every subcommand is one step of the comparison; the shell script calls them in
order and times the `suite2p` step with /usr/bin/time. Runs inside the comparison's virtual
environment (suite2p, zarr, tifffile).

  export      a tessera recording (Zarr) -> one multi-page uint16 TIFF that Suite2p reads
  maxshift    Suite2p's rigid registration search limit for a recording (pixels)
  suite2p     run Suite2p 1.x (registration, detection, extraction, classification, deconvolution)
  regions     Suite2p's stat.npy/iscell.npy -> neurofinder regions JSON (cells only, and all ROIs)
  offset      frame offset between a tool's registered frame and the simulation's reference frame,
              and the ground-truth regions moved into the registered frame by that offset
  losses      where a tool loses cells: misses and false positives by cause (simulations)
  report      gather every case's figures into results.json and a Markdown table
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------- export
def cmd_export(a):
    """Write the recording's movie as one uint16 (t, y, x) TIFF for Suite2p's TIFF reader."""
    import tifffile
    import zarr

    g = zarr.open_group(a.zarr, mode="r")
    name = g.attrs.get("tessera", {}).get("movie", "movie")
    movie = g[name]
    out = Path(a.tiff)
    out.parent.mkdir(parents=True, exist_ok=True)
    vmax = 0
    # Stream in slabs of 500 frames so memory stays at one slab.
    with tifffile.TiffWriter(out, bigtiff=movie.nbytes > 3.9e9) as tif:
        for t0 in range(0, movie.shape[0], 500):
            slab = np.asarray(movie[t0 : t0 + 500])
            vmax = max(vmax, int(slab.max()))
            tif.write(slab.astype(np.uint16), contiguous=True)
    # Suite2p converts frames to int16: values above 32767 would wrap.
    if vmax > 32767:
        print(f"warning: {a.zarr} has values up to {vmax}; Suite2p's int16 binary will wrap them",
              file=sys.stderr)
    print(f"exported {movie.shape} (max {vmax}) -> {out}")


def cmd_maxshift(a):
    """Suite2p's rigid search limit in pixels: round(maxregshift (0.1) x min(height, width))."""
    import zarr

    g = zarr.open_group(a.zarr, mode="r")
    h, w = g[g.attrs.get("tessera", {}).get("movie", "movie")].shape[1:]
    print(int(min(round(0.1 * min(h, w)), min(h, w) // 2)))


# -------------------------------------------------------------------------------------- suite2p
def cmd_suite2p(a):
    """Run the whole Suite2p 1.x pipeline on one TIFF folder, on the CPU."""
    import suite2p
    from suite2p.run_s2p import logger_setup

    logger_setup()  # Suite2p's progress log to the console (the .log file next to the timings)
    db = {
        "data_path": [str(Path(a.tiff_dir).resolve())],
        "save_path0": str(Path(a.out).resolve()),
        "fast_disk": str(Path(a.out).resolve()),
        "input_format": "tif",
        "nplanes": 1,
        "nchannels": 1,
    }
    settings = suite2p.default_settings()
    settings["torch_device"] = "cpu"
    settings["fs"] = a.fs
    settings["tau"] = a.tau
    settings["diameter"] = [a.diameter, a.diameter]
    settings["run"]["do_registration"] = 1
    # Registration metrics (PC-based diagnostics) are not part of the analysis; tessera has none.
    settings["run"]["do_regmetrics"] = False
    settings["run"]["do_detection"] = True
    settings["run"]["do_deconvolution"] = True
    # The simulator's motion is rigid: rigid registration only, as tessera runs by default.
    settings["registration"]["nonrigid"] = a.nonrigid
    # Suite2p's default detector for two-photon somata; its shipped classifier (not a user one).
    settings["detection"]["algorithm"] = "sparsery"
    settings["classification"]["use_builtin_classifier"] = True
    settings["io"]["delete_bin"] = False
    print(f"suite2p {suite2p.version}: fs={a.fs} tau={a.tau} diameter={a.diameter} "
          f"nonrigid={a.nonrigid} torch threads={__import__('torch').get_num_threads()}")
    suite2p.run_s2p(db=db, settings=settings)
    plane = Path(a.out) / "suite2p" / "plane0"
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    times = {k: float(v) for k, v in ops.get("plane_times", {}).items()}
    info = {"suite2p_version": str(suite2p.version), "plane_times_s": times,
            "n_rois": int(len(np.load(plane / "stat.npy", allow_pickle=True)))}
    (Path(a.out) / "suite2p_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


# -------------------------------------------------------------------------------------- regions
def cmd_regions(a):
    """Suite2p ROIs (all pixels: ypix, xpix) as neurofinder regions; cells (iscell==1) and all."""
    plane = Path(a.plane)
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    iscell = np.load(plane / "iscell.npy")[:, 0].astype(bool)

    def region(s):
        return {"coordinates": [[int(y), int(x)] for y, x in zip(s["ypix"], s["xpix"])]}

    cells = [region(s) for s, c in zip(stat, iscell) if c]
    every = [region(s) for s in stat]
    Path(a.cells).write_text(json.dumps(cells))
    Path(a.all).write_text(json.dumps(every))
    print(f"{len(cells)} cells of {len(every)} ROIs -> {a.cells}, {a.all}")


# --------------------------------------------------------------------------------------- offset
def _registration_shifts(tool, path):
    """(t, 2) shifts (dy, dx), both tools' convention: registered(y, x) = frame(y + dy, x + dx)."""
    if tool == "tessera":
        import zarr

        return np.asarray(zarr.open_group(path, mode="r")["registration/shifts"][:], np.float64)
    reg = np.load(Path(path) / "reg_outputs.npy", allow_pickle=True).item()
    return np.stack([reg["yoff"], reg["xoff"]], axis=1).astype(np.float64)


def cmd_offset(a):
    """Offset c of the registered frame: it shows the reference scene displaced by c = motion - shift.

    The simulation's frame t shows the scene displaced by motion[t]; registering moves it back by the
    tool's shift[t] (same sign convention in both tools), so the registered movie shows the scene
    displaced by a constant c (the template's own offset), up to registration error. Ground-truth
    regions are moved by round(c) into the registered frame, where both tools report their ROIs.
    """
    import zarr

    g = zarr.open_group(a.sim, mode="r")
    motion = np.asarray(g["ground_truth/motion"][:], np.float64)
    shifts = _registration_shifts(a.tool, a.registration)
    d = motion - shifts
    c = np.median(d, axis=0)
    resid = d - c
    rms = np.sqrt((resid**2).mean(axis=0))
    big = int((np.abs(resid).max(axis=1) > 1.0).sum())
    ci = np.round(c).astype(int)
    regions = json.loads((Path(a.sim) / "ground_truth" / "regions.json").read_text())
    h, w = g[g.attrs.get("tessera", {}).get("movie", "movie")].shape[1:]
    moved = []
    for r in regions:
        pts = [[int(y + ci[0]), int(x + ci[1])] for y, x in r["coordinates"]
               if 0 <= y + ci[0] < h and 0 <= x + ci[1] < w]
        moved.append({"coordinates": pts})
    Path(a.out).write_text(json.dumps(moved))
    info = {"offset_px": c.tolist(), "offset_applied_px": ci.tolist(),
            "registration_rms_error_px": rms.tolist(), "frames_off_by_more_than_1px": big}
    Path(a.info).write_text(json.dumps(info, indent=1))
    print(f"{a.tool}: template offset (dy, dx) = ({c[0]:.2f}, {c[1]:.2f}) px, applied {ci.tolist()}; "
          f"residual rms ({rms[0]:.2f}, {rms[1]:.2f}) px; {big} frames off by > 1 px")


# --------------------------------------------------------------------------------------- losses
def _masks_from_json(path, shape):
    regions = json.loads(Path(path).read_text())
    out = []
    for r in regions:
        m = np.zeros(shape, bool)
        for y, x in r["coordinates"]:
            m[y, x] = True
        out.append(m)
    return out


def _masks_from_tessera(path, shape):
    """Accepted tessera ROIs, pixels >= 0.2 x peak (as `tessera evaluate` binarises them)."""
    import zarr

    g = zarr.open_group(path, mode="r")
    cell = g["rois/footprints/cell"][:]
    pix = g["rois/footprints/pixel"][:]
    wt = g["rois/footprints/weight"][:]
    acc = g["rois/accepted"][:]
    out = []
    for i in np.flatnonzero(acc == 1):
        sel = cell == i
        keep = wt[sel] > 0.2 * wt[sel].max()
        m = np.zeros(shape, bool)
        m.flat[pix[sel][keep]] = True
        out.append(m)
    return out


def cmd_losses(a):
    """Classify each missed true cell and each unmatched ROI (IoU >= 0.5 matching) by likely cause.

    Misses: silent (never fires), boundary (soma cut by the field edge in some frames: within its
    radius plus the largest true motion of the edge, in the registered frame), merged (one ROI covers
    half of it and half of another cell), shape (an ROI covers half of it but IoU < 0.5, or the
    ROI went to a neighbour), not found (no ROI covers half of it; split by firing rate).
    False positives: merge (covers half of two or more cells), duplicate (covers half of a cell
    already matched), partial (overlaps a cell but covers less than half of it), spurious (no cell).
    """
    score = json.loads(Path(a.score).read_text())
    iou = next(s for s in score["scores"] if s["convention"] == "iou50")
    import zarr

    g = zarr.open_group(a.sim, mode="r")
    cells = json.loads((Path(a.sim) / "ground_truth" / "cells.json").read_text())
    motion = np.abs(np.asarray(g["ground_truth/motion"][:], np.float64)).max(axis=0)
    truth_masks = _masks_from_json(a.truth, (a.height, a.width))
    est = (_masks_from_tessera(a.estimate, (a.height, a.width)) if a.estimate.endswith(".zarr")
           else _masks_from_json(a.estimate, (a.height, a.width)))
    matched_t = {p["truth"] for p in iou["pairs"]}
    matched_e = {p["estimate"] for p in iou["pairs"]}
    tsize = np.array([m.sum() for m in truth_masks], float)
    # cover[i, j]: fraction of true cell i covered by ROI j
    inter = np.array([[(t & e).sum() for e in est] for t in truth_masks], float).reshape(
        len(truth_masks), len(est))
    cover = inter / np.maximum(tsize[:, None], 1)
    misses = {"silent": 0, "boundary": 0, "merged": 0, "shape": 0,
              "not found, rate < 0.2 Hz": 0, "not found, rate >= 0.2 Hz": 0}
    for i in range(len(truth_masks)):
        if i in matched_t:
            continue
        c = cells[i]
        ys, xs = np.nonzero(truth_masks[i])
        margin = c.get("radius_px", 0) + motion
        near_edge = len(ys) == 0 or not (margin[0] <= ys.mean() <= a.height - 1 - margin[0]
                                         and margin[1] <= xs.mean() <= a.width - 1 - margin[1])
        if not c.get("active", True):
            misses["silent"] += 1
        elif c.get("visible_fraction", 1.0) < 0.9 or near_edge:
            misses["boundary"] += 1
        elif len(est) and cover[i].max() >= 0.5:
            j = int(cover[i].argmax())
            misses["merged" if (cover[:, j] >= 0.5).sum() >= 2 else "shape"] += 1
        else:
            misses["not found, rate < 0.2 Hz" if c.get("rate_hz", 1) < 0.2
                   else "not found, rate >= 0.2 Hz"] += 1
    fps = {"merge": 0, "duplicate": 0, "partial": 0, "spurious": 0}
    for j in range(len(est)):
        if j in matched_e:
            continue
        covered = np.flatnonzero(cover[:, j] >= 0.5)
        if len(covered) >= 2:
            fps["merge"] += 1
        elif len(covered) == 1:
            fps["duplicate" if covered[0] in matched_t else "partial"] += 1
        elif inter[:, j].sum() > 0:
            fps["partial"] += 1
        else:
            fps["spurious"] += 1
    n_active = sum(1 for c in cells if c.get("active", True))
    found_active = sum(1 for i in matched_t if cells[i].get("active", True))
    out = {"misses": misses, "false_positives": fps, "n_truth": len(truth_masks),
           "n_active": n_active, "matched_active": found_active, "n_estimate": len(est)}
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


# --------------------------------------------------------------------------------------- report
def _time_v(path):
    """CPU (user + sys) and wall seconds, peak RSS (MB) from a /usr/bin/time -v log."""
    user = sys_ = wall = rss = 0.0
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("User time (seconds):"):
            user = float(line.split(":")[-1])
        elif line.startswith("System time (seconds):"):
            sys_ = float(line.split(":")[-1])
        elif line.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in line.split(": ")[-1].split(":")]
            wall = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
        elif line.startswith("Maximum resident set size (kbytes):"):
            rss = float(line.split(":")[-1]) / 1024
    return {"cpu_s": user + sys_, "wall_s": wall, "peak_rss_mb": rss}


def _scores(path):
    s = json.loads(Path(path).read_text())
    by = {x["convention"]: x for x in s["scores"]}
    i, n = by["iou50"], by["neurofinder"]
    return {"f1_iou": i["f1"], "precision_iou": i["precision"], "recall_iou": i["recall"],
            "f1_nf": n["f1"], "precision_nf": n["precision"], "recall_nf": n["recall"],
            "n_truth": i["n_truth"], "n_estimate": i["n_estimate"], "tp_iou": i["true_positives"],
            "tp_nf": n["true_positives"]}


def cmd_report(a):
    root = Path(a.dir)
    rows = []
    for case in a.cases:
        d = root / case
        if not (d / "done").exists():
            rows.append({"case": case, "error": (d / "error").read_text().strip()
                         if (d / "error").exists() else "not run"})
            continue
        r = {"case": case}
        s2p = json.loads((d / "suite2p" / "suite2p_info.json").read_text())
        r["suite2p"] = {"version": s2p["suite2p_version"], "n_rois_all": s2p["n_rois"],
                        "plane_times_s": s2p["plane_times_s"], **_time_v(d / "time-suite2p.txt"),
                        "raw": _scores(d / "score-suite2p.json"),
                        "all_rois_raw": _scores(d / "score-suite2p-all.json")}
        # One step (`extract --register`) leaves no register timing; two steps sum both.
        two = (d / "time-tessera-register.txt").exists()
        ext = _time_v(d / "time-tessera-extract.txt")
        reg = _time_v(d / "time-tessera-register.txt") if two else None
        steps = [reg, ext] if two else [ext]
        logs = ["time-tessera-register.log", "time-tessera-extract.log"] if two else ["time-tessera-extract.log"]
        r["tessera"] = {"steps": "register, extract" if two else "extract --register",
                        "register": reg, "extract": ext,
                        "cpu_s": sum(x["cpu_s"] for x in steps), "wall_s": sum(x["wall_s"] for x in steps),
                        "peak_rss_mb": max(x["peak_rss_mb"] for x in steps),
                        "raw": _scores(d / "score-tessera.json"),
                        "summary": [ln for name in logs for ln in (d / name).read_text().splitlines()
                                    if ln.startswith(("registered", "extracted"))]}
        for tool in ("suite2p", "tessera"):
            if (d / f"score-{tool}-aligned.json").exists():
                r[tool]["aligned"] = _scores(d / f"score-{tool}-aligned.json")
                r[tool]["offset"] = json.loads((d / f"offset-{tool}.json").read_text())
            if (d / f"losses-{tool}.json").exists():
                r[tool]["losses"] = json.loads((d / f"losses-{tool}.json").read_text())
        if (d / "score-suite2p-all-aligned.json").exists():
            r["suite2p"]["all_rois_aligned"] = _scores(d / "score-suite2p-all-aligned.json")
        rows.append(r)
    (root / "results.json").write_text(json.dumps(rows, indent=1))

    # Markdown: one row per case and tool. "aligned" scores (simulations) move the ground truth
    # into the tool's registered frame; the real clip has no motion ground truth (raw scores).
    lines = ["| case | tool | ROIs scored | F1 IoU>=0.5 | P / R (IoU) | F1 neurofinder | "
             "P / R (neurofinder) | F1 IoU, unaligned | CPU s | wall s | template offset (px) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | - | failed: {r['error']} |" + " |" * 8)
            continue
        for tool in ("suite2p", "tessera"):
            t = r[tool]
            s = t.get("aligned", t["raw"])
            name = f"Suite2p {t['version']}" if tool == "suite2p" else "tessera"
            n = (f"{s['n_estimate']} of {t['n_rois_all']}" if tool == "suite2p"
                 else f"{s['n_estimate']}")
            off = (f"({t['offset']['offset_px'][0]:+.2f}, {t['offset']['offset_px'][1]:+.2f})"
                   if "offset" in t else "-")
            unaligned = f"{t['raw']['f1_iou']:.3f}" if "aligned" in t else "(same)"
            lines.append(
                f"| {r['case']} | {name} | {n} | {s['f1_iou']:.3f} | "
                f"{s['precision_iou']:.3f} / {s['recall_iou']:.3f} | {s['f1_nf']:.3f} | "
                f"{s['precision_nf']:.3f} / {s['recall_nf']:.3f} | {unaligned} | "
                f"{t['cpu_s']:.1f} | {t['wall_s']:.1f} | {off} |")
    lines.append("")
    lines.append("| case | tool | active cells found (IoU) | misses: silent / boundary / merged / "
                 "shape / not found (<0.2 Hz, >=0.2 Hz) | false positives: merge / duplicate / "
                 "partial / spurious |")
    lines.append("|---|---|---|---|---|")
    for r in rows:
        for tool in ("suite2p", "tessera"):
            lo = r.get(tool, {}).get("losses") if "error" not in r else None
            if not lo:
                continue
            m, f = lo["misses"], lo["false_positives"]
            lines.append(
                f"| {r['case']} | {tool} | {lo['matched_active']} of {lo['n_active']} | "
                f"{m['silent']} / {m['boundary']} / {m['merged']} / {m['shape']} / "
                f"{m['not found, rate < 0.2 Hz']}, {m['not found, rate >= 0.2 Hz']} | "
                f"{f['merge']} / {f['duplicate']} / {f['partial']} / {f['spurious']} |")
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--zarr", required=True)
    e.add_argument("--tiff", required=True)
    m = sub.add_parser("maxshift")
    m.add_argument("--zarr", required=True)
    s = sub.add_parser("suite2p")
    s.add_argument("--tiff-dir", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--fs", type=float, required=True)
    s.add_argument("--tau", type=float, required=True)
    s.add_argument("--diameter", type=float, required=True)
    s.add_argument("--nonrigid", action="store_true")
    r = sub.add_parser("regions")
    r.add_argument("--plane", required=True)
    r.add_argument("--cells", required=True)
    r.add_argument("--all", required=True)
    o = sub.add_parser("offset")
    o.add_argument("--tool", choices=["tessera", "suite2p"], required=True)
    o.add_argument("--sim", required=True)
    o.add_argument("--registration", required=True,
                   help="tessera: the registered Zarr; suite2p: its plane0 folder")
    o.add_argument("--out", required=True, help="ground-truth regions in the registered frame")
    o.add_argument("--info", required=True)
    lo = sub.add_parser("losses")
    lo.add_argument("--score", required=True, help="tessera evaluate --json output")
    lo.add_argument("--truth", required=True, help="the regions JSON the score used as truth")
    lo.add_argument("--sim", required=True, help="the simulation (cells.json, motion)")
    lo.add_argument("--estimate", required=True, help="regions JSON, or a tessera extraction")
    lo.add_argument("--height", type=int, required=True)
    lo.add_argument("--width", type=int, required=True)
    lo.add_argument("--out", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--dir", required=True)
    rp.add_argument("cases", nargs="+")
    a = p.parse_args()
    {"export": cmd_export, "maxshift": cmd_maxshift, "suite2p": cmd_suite2p, "regions": cmd_regions, "offset": cmd_offset,
     "losses": cmd_losses, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
