"""Foreground-mask time on a 1750x1750 field (the paper's size), per modality.

Usage: .venv/bin/python bench/mask_speed.py [--repeat 3]

Prints wall time (best of --repeat) of cellnb.mask.foreground_mask and the
mask IoU against the field's ground truth. Target: under 10 s per modality
on 2 CPU cores.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _field import field_1750  # noqa: E402

from cellnb import markers, mask  # noqa: E402
from cellnb.metrics import mask_iou  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    f = field_1750()
    print(f"field {f.shape}, {int(f.cells.max())} cells, cpus={os.cpu_count()}")
    t = time.perf_counter()
    mk = markers.find_markers(f.nucleus)
    print(f"markers: {len(mk)} in {time.perf_counter() - t:.2f} s")
    for name, img, mod in [
            ("fluorescence", f.images["fluorescence"], "fluorescence"),
            ("brightfield", f.images["brightfield"], "brightfield"),
            ("both", np.stack([f.images["fluorescence"], f.images["brightfield"]], -1),
             ["fluorescence", "brightfield"])]:
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            m = mask.foreground_mask(img, mod, markers=mk)
            times.append(time.perf_counter() - t)
        print(f"mask {name:12s}: best {min(times):.2f} s, median {np.median(times):.2f} s, "
              f"IoU {mask_iou(m, f.cells):.3f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
