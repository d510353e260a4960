"""Write TIFF fixtures with tifffile for tessera's ingest tests.

Usage: write_tiffs.py OUTDIR
Writes multipage.tif (uint16, 23 frames of 40x56, ImageJ metadata with finterval and micron unit),
bigtiff.tif (BigTIFF, int16, 9 frames of 33x20), float.tif (float32, 5 frames), and
inconsistent.tif (page 3 has a different size).
"""
import sys
from pathlib import Path

import numpy as np
import tifffile

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
movie = rng.integers(0, 4000, size=(23, 40, 56), dtype=np.uint16)
tifffile.imwrite(out / "multipage.tif", movie, imagej=True, resolution=(1 / 0.8, 1 / 0.8),
                 metadata={"axes": "TYX", "finterval": 1 / 30.0, "unit": "micron"})
signed = rng.integers(-2000, 8000, size=(9, 33, 20), dtype=np.int16)
tifffile.imwrite(out / "bigtiff.tif", signed, bigtiff=True)
floats = rng.random((5, 12, 14), dtype=np.float32)
tifffile.imwrite(out / "float.tif", floats)
with tifffile.TiffWriter(out / "inconsistent.tif") as w:
    for i in range(5):
        shape = (16, 16) if i != 3 else (16, 12)
        w.write(rng.integers(0, 100, size=shape, dtype=np.uint16), contiguous=False)
print("ok")
