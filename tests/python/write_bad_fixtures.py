"""Write malformed inputs for tessera's error tests.

Usage: write_bad_fixtures.py OUTDIR
- two_d.zarr: a 2-D uint16 array;
- complex.zarr: a 3-D complex64 array (unsupported dtype);
- corrupt.zarr: a 3-D uint16 v3 array (zstd) whose chunk c/1/0/0 is truncated to half its bytes;
- nan.zarr: a 3-D float32 array, finite except a NaN at frame 25, pixel (3, 4).
"""
import sys
from pathlib import Path

import numpy as np
import zarr

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
a = zarr.create_array(out / "two_d.zarr", shape=(20, 30), chunks=(10, 10), dtype="uint16", zarr_format=3)
a[:] = 1
a = zarr.create_array(out / "complex.zarr", shape=(4, 5, 6), chunks=(2, 5, 6), dtype="complex64", zarr_format=3)
a[:] = 1 + 2j
a = zarr.create_array(out / "corrupt.zarr", shape=(20, 16, 16), chunks=(10, 16, 16), dtype="uint16", zarr_format=3)
a[:] = np.arange(20 * 16 * 16, dtype=np.uint16).reshape(20, 16, 16)
chunk = out / "corrupt.zarr" / "c" / "1" / "0" / "0"
data = chunk.read_bytes()
chunk.write_bytes(data[: len(data) // 2])
a = zarr.create_array(out / "nan.zarr", shape=(40, 24, 24), chunks=(20, 24, 24), dtype="float32", zarr_format=3)
v = np.random.default_rng(0).normal(100.0, 5.0, size=(40, 24, 24)).astype(np.float32)
v[25, 3, 4] = np.nan
a[:] = v
print("ok")
