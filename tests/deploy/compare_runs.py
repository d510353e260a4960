"""Compare the data objects of two run outputs byte for byte: SHA-256 of every file except
provenance records, RO-Crates and the run's own log (`run/`), which hold times and hosts (the
same selection as tests/e2e/run.rs `data_digests`). Exits 1 naming each difference.

Usage: compare_runs.py REFERENCE_DIR CANDIDATE_DIR
"""
import hashlib
import os
import sys


def digests(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root).replace(os.sep, "/")
            if (key.startswith("provenance/") or key.startswith("run/") or "/provenance/" in key
                    or key.endswith("ro-crate-metadata.json")):
                continue
            with open(path, "rb") as f:
                out[key] = hashlib.sha256(f.read()).hexdigest()
    return out


reference, candidate = (digests(d) for d in sys.argv[1:3])
problems = [f"missing: {k}" for k in sorted(set(reference) - set(candidate))]
problems += [f"extra: {k}" for k in sorted(set(candidate) - set(reference))]
problems += [f"differs: {k}" for k in sorted(set(reference) & set(candidate))
             if reference[k] != candidate[k]]
if not reference:
    problems.append(f"no data objects under {sys.argv[1]}")
for p in problems[:20]:
    print(p)
if problems:
    print(f"{len(problems)} difference(s) between {sys.argv[1]} and {sys.argv[2]}")
    sys.exit(1)
print(f"{len(reference)} data objects identical")
