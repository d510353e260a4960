"""Read what tessera wrote with the Python reference implementation and compare it with the truth.

Usage:
  read_tessera_output.py recording STORE ARRAY RAW DTYPE   # STORE/ARRAY must equal the raw file
  read_tessera_output.py tiff STORE ARRAY TIFF             # STORE/ARRAY must equal tifffile's pixels
  read_tessera_output.py simulation STORE                  # print a JSON summary of movie + ground truth
"""
import json
import sys

import numpy as np
import zarr

mode = sys.argv[1]
if mode == "recording":
    store, array, raw, dtype = sys.argv[2:6]
    a = zarr.open_array(store, path=array, mode="r")
    want = np.frombuffer(open(raw, "rb").read(), dtype=np.dtype(dtype).newbyteorder("<")).reshape(a.shape)
    got = a[:]
    assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    assert np.array_equal(got, want), "values differ"
    print(json.dumps({"shape": list(a.shape), "chunks": list(a.chunks), "equal": True}))
elif mode == "tiff":
    import tifffile
    store, array, tif = sys.argv[2:5]
    a = zarr.open_array(store, path=array, mode="r")
    want = tifffile.imread(tif)
    if want.ndim == 2:
        want = want[None]
    assert a.shape == want.shape, (a.shape, want.shape)
    assert a.dtype == want.dtype, (a.dtype, want.dtype)
    assert np.array_equal(a[:], want), "pixels differ from tifffile's"
    print(json.dumps({"shape": list(a.shape), "equal": True, "attrs": dict(a.attrs)}))
elif mode == "simulation":
    store = sys.argv[2]
    g = zarr.open_group(store, mode="r")
    movie = g["movie"]
    gt = g["ground_truth"]
    fp = gt["footprints"]
    print(json.dumps({
        "movie_shape": list(movie.shape),
        "movie_dtype": str(movie.dtype),
        "movie_sum": int(movie[:].astype(np.uint64).sum()),
        "fluorescence_shape": list(gt["fluorescence"].shape),
        "spikes_sum": int(gt["spikes"][:].astype(np.uint64).sum()),
        "motion_shape": list(gt["motion"].shape),
        "footprint_nnz": int(fp["pixel"].shape[0]),
        "max_cell": int(fp["cell"][:].max()) if fp["cell"].shape[0] else -1,
        "attrs": dict(g.attrs),
    }))
else:
    sys.exit(f"unknown mode {mode}")
