#!/usr/bin/env bash
# Benchmarks recorded in docs/BENCHMARKS.md. Needs ~15 GB of free disk under $BENCH_DIR.
#   simulate: 512x512x6000 base preset (the size the simulator must generate quickly);
#   ingest:   a 512x512x2000 uint16 multi-page TIFF (1 GB) written by tifffile, vs reading the file raw;
#   read:     chunk-aligned and unaligned box reads of the ingested recording.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-/tmp/tessera-bench}
mkdir -p "$dir"
cargo build --release --locked -p tessera-cli
bin=target/release/tessera
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
echo "== simulate 512x512x6000 (base)"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$bin" simulate --preset base --frames 6000 --seed 1 --out "$dir/sim6000.zarr" --overwrite
du -sh "$dir/sim6000.zarr"
echo "== make a 2000-frame TIFF with tifffile"
python3 - "$dir" <<'PY'
import sys, zarr, tifffile
d = sys.argv[1]
m = zarr.open_group(f"{d}/sim6000.zarr", mode="r")["movie"]
with tifffile.TiffWriter(f"{d}/movie2000.tif", bigtiff=True) as w:
    for t0 in range(0, 2000, 200):
        for frame in m[t0:t0 + 200]:
            w.write(frame, contiguous=True)
PY
ls -l "$dir/movie2000.tif"
echo "== raw read of the TIFF (second pass, page cache warm)"
dd if="$dir/movie2000.tif" of=/dev/null bs=16M 2>/dev/null
dd if="$dir/movie2000.tif" of=/dev/null bs=16M 2>&1 | tail -1
echo "== ingest"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$bin" ingest "$dir/movie2000.tif" --out "$dir/movie2000.zarr" --overwrite
echo "== box reads"
"$bin" bench read "$dir/movie2000.zarr"
