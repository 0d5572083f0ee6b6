"""Peak memory of `segment` against field size.

Usage: .venv/bin/python bench/memory.py [--sizes 512 1024 1750 3000] [--steps 3]

Each size runs in its own process (peak RSS is per process): a synthetic
fluorescence field of that side (cells of radius 22 px, as the paper's), the
whole `segment` pipeline (markers, graph-cut mask, patches, a few training
steps, integration) and the peak resident memory it reached. Training steps
do not change the peak much (one area batch at a time), so a few suffice.
Prints a Markdown table beside the estimate of :func:`cellnb.pipeline.memory_estimate`
(a base, bytes per field pixel, bytes per patch pixel of the largest training batch:
the network's activations), which `segment` uses to refuse fields that would not fit.
The estimate's constants were chosen from this table (a least-squares fit of the
three terms is not meaningful on four sizes: the batch barely changes above 1024 px).
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
from cellnb import patches as P
batch = max(len(i) for i in P.area_batches(res.patches, 640))
print("RESULT" + json.dumps({"side": side, "cells": int(res.n_cells),
      "patches": len(res.patches), "seconds": time.perf_counter() - t,
      "batch": batch, "size": res.patches.size,
      "batch_px": batch * res.patches.size ** 2,
      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "before_mib": base / 1024,
      "estimate_mib": pipeline.memory_estimate((side, side), 1,
                                               batch * res.patches.size ** 2) / 2**20}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1750, 3000])
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rows = []
    print("| side (px) | cells | patch side | largest area batch | peak RSS (MiB) | "
          "estimate (MiB) | s |")
    print("|---|---|---|---|---|---|---|")
    for side in a.sizes:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", CHILD, str(side), str(a.steps)], env=env,
                           capture_output=True, text=True)
        if p.returncode:
            print(f"| {side} | failed: {p.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads([s for s in p.stdout.splitlines() if s.startswith("RESULT")][-1][6:])
        rows.append(r)
        print(f"| {side} | {r['cells']} | {r['size']} | {r['batch']} | {r['peak_mib']:.0f} | "
              f"{r['estimate_mib']:.0f} | {time.perf_counter() - t:.0f} |", flush=True)
    from cellnb import pipeline
    print(f"estimate: {pipeline.MEMORY_BASE / 2**20:.0f} MiB + {pipeline.MEMORY_PER_PIXEL} bytes "
          f"per field pixel + {pipeline.MEMORY_PER_BATCH_PIXEL} bytes per patch pixel of the "
          "largest area batch (cellnb.pipeline.memory_estimate)")

if __name__ == "__main__":
    main()
