#!/usr/bin/env bash
# Suite2p side by side with tessera on the same recordings (a benchmark, not run in CI).
#
#   scripts/compare_suite2p.sh [OUT_DIR]          (default OUT_DIR: out/suite2p-compare)
#
# For each case: the simulator presets base, low-snr, small-cells, dense and large-motion
# (256x256 px, 3000 frames, seed 1) and the real neurofinder.01.01 clip (../shared/data), it runs
#   - Suite2p's whole pipeline (TIFF -> binary, registration, detection, extraction,
#     classification, spike deconvolution) on a TIFF export of the recording, and
#   - tessera on the Zarr recording: `extract --register` in one step (TESSERA_STEPS=two:
#     `register`, then `extract` on its output),
# each under /usr/bin/time -v (CPU = user + sys, wall), then scores both with `tessera evaluate`.
# The results land in OUT_DIR/<case>/ and OUT_DIR/results.json; OUT_DIR/table.md is the summary.
#
# It builds nothing: it uses an existing tessera binary (TESSERA_BIN, default
# target/release/tessera; build it with `cargo build --release -p tessera-cli`).
#
# Environment:
#   S2P_VENV      virtual environment with Suite2p (default out/suite2p-venv; created when missing)
#   S2P_SPEC      what pip installs into it (default suite2p==1.1.0, the version measured)
#   TESSERA_BIN   tessera binary (default target/release/tessera)
#   THREADS       threads each tool may use (default 2)
#   CASES         cases to run (default "base low-snr small-cells dense large-motion neurofinder")
#   FRAMES, SIZE  simulation length and edge (default 3000, 256)
#   TESSERA_MAX_SHIFT  tessera's --max-shift (default: Suite2p's own limit, 10% of the
#                 shorter edge, so both tools search the same shifts; tessera's default is 15)
#   TESSERA_STEPS one (default: `extract --register`) or two (`register`, then `extract`)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=${1:-out/suite2p-compare}
venv=${S2P_VENV:-out/suite2p-venv}
spec=${S2P_SPEC:-suite2p==1.1.0}
bin=${TESSERA_BIN:-target/release/tessera}
threads=${THREADS:-2}
cases=${CASES:-base low-snr small-cells dense large-motion neurofinder}
steps=${TESSERA_STEPS:-one}
case $steps in one | two) ;; *) echo "TESSERA_STEPS must be one or two, not '$steps'" >&2; exit 2 ;; esac
frames=${FRAMES:-3000}
size=${SIZE:-256}
nf=../shared/data/neurofinder.01.01
helper=$repo/scripts/suite2p_compare.py

[ -x "$bin" ] || { echo "no tessera binary at $bin (set TESSERA_BIN or build it first)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is missing (Debian: apt-get install time)" >&2; exit 1; }
bin=$(realpath "$bin")
mkdir -p "$out"
out=$(realpath "$out")

# --- 1. Suite2p's environment: a virtual env with Suite2p (PyPI torch; CPU is used), zarr and
#        tifffile. Created once; reused when it already imports suite2p.
if ! "$venv/bin/python" -c 'import suite2p, zarr, tifffile' 2>/dev/null; then
  echo "== creating $venv with $spec"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "$spec" zarr tifffile
fi
py=$(realpath "$venv")/bin/python
"$py" -c 'import suite2p; print("suite2p", suite2p.version)'

# --- 2. The same thread budget for both tools: tessera's rayon pool, and torch/numba/BLAS in
#        Suite2p.
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
  OPENBLAS_NUM_THREADS=$threads NUMBA_NUM_THREADS=$threads

# Score every simulated cell, silent ones included, in every evaluation: the aligned scores (step 8)
# use a regions JSON as truth, which carries no activity, so tessera builds whose `evaluate`
# defaults to "detectable" cells for a simulation are told `--truth-cells all` to stay comparable.
truth_cells=()
if "$bin" evaluate --help | grep -- --truth-cells > /dev/null; then truth_cells=(--truth-cells all); fi

# Run a command under /usr/bin/time -v: resource figures to $1 (X.txt), the command's output to X.log.
timed() {
  local log=$1
  shift
  /usr/bin/time -v -o "$log" "$@" > "${log%.txt}.log" 2>&1 || {
    echo "failed: $* (see ${log%.txt}.log)" >&2
    tail -20 "${log%.txt}.log" >&2
    return 1
  }
}

# Per-case Suite2p settings: frame rate (Hz), indicator decay tau (s), soma diameter (px).
#   simulations: 30 Hz, GCaMP6s decay 1.2 s; soma radius 6 um at 1 um/px (12 px), small-cells
#   4 um at 1.5 um/px (about 6 px). neurofinder.01.01: 7.5 Hz, GCaMP6s, 1.25 um/px (about 10 px).
s2p_params() {
  case $1 in
    small-cells) echo "30 1.2 6" ;;
    neurofinder) echo "7.5 1.2 10" ;;
    *) echo "30 1.2 12" ;;
  esac
}

run_case() {
  local c=$1 d=$out/$1
  mkdir -p "$d"
  rm -f "$d/done" "$d/error"
  local rec truth
  # --- 3. The recording: a simulation with ground truth, or the ingested real clip.
  if [ "$c" = neurofinder ]; then
    rec=$d/recording.zarr
    truth=$nf/regions/regions.json
    [ -d "$rec" ] || "$bin" ingest "$nf/images" --out "$rec"
  else
    rec=$d/sim.zarr
    truth=$rec
    [ -d "$rec" ] || "$bin" simulate --preset "$c" --frames "$frames" --height "$size" \
      --width "$size" --seed 1 --out "$rec"
  fi
  # --- 4. Suite2p's input: the same movie as one uint16 TIFF in a folder of its own.
  [ -f "$d/tiff/movie.tif" ] || "$py" "$helper" export --zarr "$rec" --tiff "$d/tiff/movie.tif"

  # --- 5. Suite2p: the full pipeline, timed. A fresh output folder each run (Suite2p would
  #        otherwise reuse its binary and skip registration).
  rm -rf "$d/suite2p"
  read -r fs tau diam <<< "$(s2p_params "$c")"
  echo "== $c: Suite2p (fs $fs Hz, tau $tau s, diameter $diam px)"
  timed "$d/time-suite2p.txt" "$py" "$helper" suite2p --tiff-dir "$d/tiff" --out "$d/suite2p" \
    --fs "$fs" --tau "$tau" --diameter "$diam"
  local plane=$d/suite2p/suite2p/plane0
  "$py" "$helper" regions --plane "$plane" --cells "$d/suite2p-regions.json" \
    --all "$d/suite2p-regions-all.json"

  # --- 6. tessera, timed: `extract --register` (one step), or `register` then `extract` (two,
  #        each timed). Defaults (as quickstart.sh runs them), except the search limit of the
  #        registration, set to Suite2p's. The registration's shifts land in $registered.
  local max_shift=${TESSERA_MAX_SHIFT:-$("$py" "$helper" maxshift --zarr "$rec")}
  local registered
  rm -f "$d/time-tessera-register.txt" "$d/time-tessera-register.log"
  if [ "$steps" = one ]; then
    echo "== $c: tessera extract --register (--max-shift $max_shift)"
    timed "$d/time-tessera-extract.txt" "$bin" extract "$rec" --register --max-shift "$max_shift" \
      --out "$d/rois.zarr" --overwrite
    registered=$d/rois.zarr
  else
    echo "== $c: tessera register (--max-shift $max_shift) + extract"
    timed "$d/time-tessera-register.txt" "$bin" register "$rec" --out "$d/registered.zarr" \
      --max-shift "$max_shift" --overwrite
    timed "$d/time-tessera-extract.txt" "$bin" extract "$d/registered.zarr" --out "$d/rois.zarr" --overwrite
    registered=$d/registered.zarr
  fi
  grep -h "registered\|cells\|components" "$d"/time-tessera-*.log || true

  # --- 7. Scores against the ground truth as it is stored (the simulation's reference frame,
  #        or the lab's labels).
  local tc=()
  [ "$c" = neurofinder ] || tc=("${truth_cells[@]}")
  "$bin" evaluate --truth "$truth" --estimate "$d/suite2p-regions.json" "${tc[@]}" --json > "$d/score-suite2p.json"
  "$bin" evaluate --truth "$truth" --estimate "$d/suite2p-regions-all.json" "${tc[@]}" --json > "$d/score-suite2p-all.json"
  "$bin" evaluate --truth "$truth" --estimate "$d/rois.zarr" "${tc[@]}" --json > "$d/score-tessera.json"

  # --- 8. Simulations only: both tools report ROIs in their registered frame, which is the
  #        reference scene displaced by the template's offset. Move the ground truth into each
  #        tool's frame (offset from the true motion) and score again; then count where each tool
  #        loses cells.
  if [ "$c" != neurofinder ]; then
    "$py" "$helper" offset --tool suite2p --sim "$rec" --registration "$plane" \
      --out "$d/truth-suite2p-frame.json" --info "$d/offset-suite2p.json"
    "$py" "$helper" offset --tool tessera --sim "$rec" --registration "$registered" \
      --out "$d/truth-tessera-frame.json" --info "$d/offset-tessera.json"
    "$bin" evaluate --truth "$d/truth-suite2p-frame.json" --estimate "$d/suite2p-regions.json" \
      --json > "$d/score-suite2p-aligned.json"
    "$bin" evaluate --truth "$d/truth-suite2p-frame.json" --estimate "$d/suite2p-regions-all.json" \
      --json > "$d/score-suite2p-all-aligned.json"
    "$bin" evaluate --truth "$d/truth-tessera-frame.json" --estimate "$d/rois.zarr" \
      --json > "$d/score-tessera-aligned.json"
    "$py" "$helper" losses --score "$d/score-suite2p-aligned.json" --truth "$d/truth-suite2p-frame.json" \
      --sim "$rec" --estimate "$d/suite2p-regions.json" \
      --height "$size" --width "$size" --out "$d/losses-suite2p.json"
    "$py" "$helper" losses --score "$d/score-tessera-aligned.json" --truth "$d/truth-tessera-frame.json" \
      --sim "$rec" --estimate "$d/rois.zarr" \
      --height "$size" --width "$size" --out "$d/losses-tessera.json"
  fi
  touch "$d/done"
}

# --- 9. Every case; a failing case is recorded and the others still run. (Each case runs as a
#        background job so that `set -e` still stops it at its first failing step; in a plain
#        `run_case || ...` bash would ignore -e inside the function.)
for c in $cases; do
  if [ "$c" = neurofinder ] && [ ! -d "$nf/images" ]; then
    mkdir -p "$out/$c" && echo "$nf/images not found" > "$out/$c/error"
    continue
  fi
  run_case "$c" &
  if ! wait $!; then
    echo "case $c failed" >&2
    echo "a step failed; see $out/$c/*.log" > "$out/$c/error"
  fi
done

# --- 10. Summary table (Markdown) and all figures (JSON).
# shellcheck disable=SC2086
"$py" "$helper" report --dir "$out" $cases
echo "== done: $out/table.md, $out/results.json"
