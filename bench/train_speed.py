"""Training speed and segment wall time on a 1750x1750 field (the paper's size).

Usage: .venv/bin/python bench/train_speed.py [--steps 40] [--segment-steps 0]
                                              [--precision auto|float32|mixed_bfloat16]

Prints: patches per second of the training step (after a warm-up step that
compiles it), seconds per step, the number of steps one pass over the field
takes, the projected time for a step budget, optionally the wall time of the
whole `segment` pipeline with --segment-steps (with where training stopped and
the matched mIOU against the field's ground truth), and peak memory (RSS).
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _field import field_1750  # noqa: E402

import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)

from cellnb import baseline, markers, mask, metrics, patches, pipeline, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40, help="timed training steps")
    ap.add_argument("--segment-steps", type=int, default=0,
                    help="also time `segment` end to end with this step budget")
    ap.add_argument("--precision", default="auto", help="UNet dtype policy (TrainConfig)")
    a = ap.parse_args()
    f = field_1750()
    print(f"field {f.shape}, {int(f.cells.max())} cells, cpus={os.cpu_count()}, "
          f"devices={[d.device_type for d in tf.config.list_physical_devices()]}")
    mk = markers.find_markers(f.nucleus)
    m = mask.foreground_mask(f.images["fluorescence"], markers=mk)
    ps = patches.extract_patches(f.stack(["fluorescence"]), mk, m,
                                 size=patches.default_patch_size(mk))
    n_batches = len(patches.area_batches(ps, 640))
    print(f"{len(ps)} patches of {ps.size}x{ps.size}, {n_batches} areas of 640x640 per pass")
    t0 = time.perf_counter()
    warm = train.train(ps, train.TrainConfig(max_steps=1, precision=a.precision),
                       progress=False)
    print(f"first step (compile): {time.perf_counter() - t0:.1f} s, precision "
          f"{warm.config.precision}")
    rows = []
    train.train(ps, train.TrainConfig(max_steps=a.steps, patience=10**6), model=warm.model,
                progress=False, callback=rows.append)
    secs = rows[-1]["seconds"] - rows[0]["seconds"]
    n = sum(r["patches"] for r in rows[1:])
    per_step = secs / (len(rows) - 1)
    print(f"training: {n / secs:.1f} patches/s, {per_step:.2f} s/step "
          f"(mean {n / (len(rows) - 1):.0f} patches/step)")
    for budget in (300, 600, 1500):
        print(f"  projected {budget} steps: {budget * per_step / 60:.1f} min")
    if a.segment_steps:
        t0 = time.perf_counter()
        out = pipeline.segment(f.images["fluorescence"], "fluorescence", nucleus=f.nucleus,
                               config=train.TrainConfig(max_steps=a.segment_steps,
                                                        precision=a.precision),
                               progress=False, log=lambda s: None)
        print(f"segment ({a.segment_steps} steps): {time.perf_counter() - t0:.1f} s, "
              f"{out.n_cells} cells; steps: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in out.seconds.items()))
        tr = out.training
        print(f"  training stopped: {tr.stop_reason} after {tr.steps} steps "
              f"({tr.steps / n_batches:.0f} passes over the field), final loss "
              f"{tr.losses[-1]:.1f}")
        # is that stop a useful minimum? score it against the field's ground truth
        cnn = metrics.matched_iou(f.cells, out.labels)
        near = metrics.matched_iou(f.cells, baseline.nearest_marker(out.mask, out.markers))
        print(f"  matched mIOU vs ground truth: CNN {cnn['mean']:.3f}, "
              f"nearest-marker split of the same mask {near['mean']:.3f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
