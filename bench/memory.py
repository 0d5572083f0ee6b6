"""Peak memory of `segment` against field size.

Usage: .venv/bin/python bench/memory.py [--sizes 512 1024 1750 3000] [--steps 3]

Each size runs in its own process (peak RSS is per process): a synthetic
fluorescence field of that side (cells of radius 22 px, as the paper's), the
whole `segment` pipeline (markers, graph-cut mask, patches, a few training
steps, integration) and the peak resident memory it reached. Training steps
do not change the peak much (one area batch at a time), so a few suffice.
Prints a Markdown table and the fitted bytes per pixel that
:func:`cellnb.pipeline.memory_estimate` uses to refuse fields that would not fit.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
from cellnb import datasets, pipeline, train
side, steps = int(sys.argv[1]), int(sys.argv[2])
f = datasets.make_field((side, side), seed=side, mean_radius=22)
img, nuc = f.images["fluorescence"], f.nucleus
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = pipeline.segment(img, "fluorescence", nucleus=nuc, progress=False, log=lambda s: None,
                       config=train.TrainConfig(max_steps=steps))
print("RESULT" + json.dumps({"side": side, "cells": int(res.n_cells),
      "patches": len(res.patches), "seconds": time.perf_counter() - t,
      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "before_mib": base / 1024,
      "estimate_mib": pipeline.memory_estimate((side, side), 1) / 2**20}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1750, 3000])
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rows = []
    print("| side (px) | cells | patches | peak RSS (MiB) | estimate (MiB) | s |")
    print("|---|---|---|---|---|---|")
    for side in a.sizes:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", CHILD, str(side), str(a.steps)], env=env,
                           capture_output=True, text=True)
        if p.returncode:
            print(f"| {side} | failed: {p.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads([s for s in p.stdout.splitlines() if s.startswith("RESULT")][-1][6:])
        rows.append(r)
        print(f"| {side} | {r['cells']} | {r['patches']} | {r['peak_mib']:.0f} | "
              f"{r['estimate_mib']:.0f} | {time.perf_counter() - t:.0f} |", flush=True)
    if len(rows) >= 2:
        import numpy as np
        px = np.array([r["side"] ** 2 for r in rows], float)
        mib = np.array([r["peak_mib"] for r in rows])
        slope, icpt = np.polyfit(px, mib, 1)
        print(f"fit: peak = {icpt:.0f} MiB + {slope * 2**20:.0f} bytes/pixel")


if __name__ == "__main__":
    main()
