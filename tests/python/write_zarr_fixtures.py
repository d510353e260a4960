"""Write Zarr arrays with the Python reference implementation (zarr-python 3) for tessera to read.

Usage: write_zarr_fixtures.py OUTDIR

For each case, writes OUTDIR/<case>.zarr (the store), OUTDIR/<case>.raw (the same values, C order,
little-endian) and one manifest OUTDIR/manifest.json: {case: {"array": path or null, "dtype", "shape"}}.
"""
import json
import sys
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(20261128)
shape = (37, 50, 45)  # deliberately not a multiple of the chunks
movie_u16 = rng.integers(0, 65535, size=shape, dtype=np.uint16)
# Smooth-ish content too, so compressors actually compress something.
movie_u16[:, :25, :] = (np.arange(25)[None, :, None] * 100 + np.arange(37)[:, None, None]).astype(np.uint16)
manifest = {}


def record(case, data, array_path):
    (out / f"{case}.raw").write_bytes(data.astype(data.dtype.newbyteorder("<")).tobytes(order="C"))
    manifest[case] = {"array": array_path, "dtype": str(data.dtype.newbyteorder("=").name), "shape": list(data.shape)}


# v3 + zstd, array inside a group at "movie".
g = zarr.open_group(out / "v3_zstd.zarr", mode="w", zarr_format=3)
a = g.create_array("movie", shape=shape, chunks=(8, 16, 16), dtype="uint16", compressors=ZstdCodec(level=5))
a[:] = movie_u16
record("v3_zstd", movie_u16, "movie")

# v3 sharded: shards of 16x32x32 holding 8x16x16 inner chunks; root array.
a = zarr.create_array(out / "v3_sharded.zarr", shape=shape, shards=(16, 32, 32), chunks=(8, 16, 16),
                      dtype="uint16", compressors=ZstdCodec(level=3), zarr_format=3)
a[:] = movie_u16
record("v3_sharded", movie_u16, None)

# v2 + blosc (lz4, shuffle), root array.
a = zarr.create_array(out / "v2_blosc.zarr", shape=shape, chunks=(10, 20, 20), dtype="uint16",
                      compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
                      zarr_format=2)
a[:] = movie_u16
record("v2_blosc", movie_u16, None)

# v2 + zlib, nested in a group at "acq/raw".
g = zarr.open_group(out / "v2_zlib.zarr", mode="w", zarr_format=2)
a = g.create_array("acq/raw", shape=shape, chunks=(16, 25, 15), dtype="uint16",
                   compressors=numcodecs.Zlib(level=4))
a[:] = movie_u16
record("v2_zlib", movie_u16, "acq/raw")

# v2 big-endian int16 (ScanImage-like signed data).
signed = (movie_u16.astype(np.int32) - 32768).astype(">i2")
a = zarr.create_array(out / "v2_int16_be.zarr", shape=shape, chunks=(8, 25, 45), dtype=">i2",
                      compressors=numcodecs.Zstd(level=1), zarr_format=2)
a[:] = signed
record("v2_int16_be", signed.astype("<i2"), None)

# v3 float32.
f32 = (movie_u16.astype(np.float32) / 7.0).astype(np.float32)
a = zarr.create_array(out / "v3_float32.zarr", shape=shape, chunks=(37, 16, 16), dtype="float32",
                      compressors=ZstdCodec(level=3), zarr_format=3)
a[:] = f32
record("v3_float32", f32, None)

(out / "manifest.json").write_text(json.dumps(manifest, indent=1))
print(json.dumps(sorted(manifest)))
