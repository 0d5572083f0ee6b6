"""Batch throughput: fields per minute of ``cellnb batch --mode segment``, 1 vs N workers.

Usage: .venv/bin/python bench/batch_speed.py [--fields 6] [--size 256] [--steps 100]
                                              [--workers 1 2]

Generates small synthetic fields (cached under bench/.cache/), runs the batch
once per worker count into a fresh folder, and prints wall time, fields per
minute and the mean mIOU of the runs. Wall time includes starting the Dask
cluster and TensorFlow in every worker, as a user would see it.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cellnb import batch, datasets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    plate = Path(__file__).parent / ".cache" / f"plate_{a.fields}x{a.size}"
    if not plate.exists():
        for i in range(a.fields):
            datasets.save_field(datasets.make_field((a.size, a.size), seed=300 + i,
                                                    name=f"well_{i:02d}"),
                                plate / f"well_{i:02d}")
    print(f"{a.fields} fields of {a.size}x{a.size}, {a.steps} training steps each, "
          f"cpus={os.cpu_count()}")
    for w in a.workers:
        out = Path(tempfile.mkdtemp(prefix="cellnb_batch_"))
        t = time.perf_counter()
        rows = batch.run_batch([plate], out, {"steps": a.steps, "configs": ["fluorescence"]},
                               workers=w, progress=False, log=lambda s: None)
        secs = time.perf_counter() - t
        ok = [r for r in rows if r["status"] == "done"]
        miou = sum(r["mIOU[fluorescence]"] for r in ok) / max(len(ok), 1)
        print(f"workers={w} threads/worker={max(1, (os.cpu_count() or 1) // w)}: "
              f"{secs:.0f} s, {len(ok) / secs * 60:.2f} fields/min, {len(ok)}/{len(rows)} done, "
              f"mean mIOU {miou:.3f}")
        shutil.rmtree(out, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
