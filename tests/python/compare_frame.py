"""Compare one TIFF frame as tifffile reads it with a raw little-endian uint16 dump.

Usage: compare_frame.py FRAME.tif FRAME.raw
"""
import sys

import numpy as np
import tifffile

want = tifffile.imread(sys.argv[1])
got = np.frombuffer(open(sys.argv[2], "rb").read(), dtype="<u2").reshape(want.shape)
assert want.dtype == np.uint16, want.dtype
assert np.array_equal(want, got), f"pixels differ in {int((want != got).sum())} places"
print("equal")
