"""Training speed and time to the stable minimum on a 1750x1750 field (the paper's size).

Usage: .venv/bin/python bench/train_speed.py [--backend tensorflow|jax|torch] [--steps 40]
                                              [--segment-steps 0] [--precision auto]
                                              [--init MODEL.keras]

Prints: the Keras backend and the devices it sees, patches per second of the
training step (after a warm-up step that compiles it), seconds per step, the
number of steps one pass over the field takes, the projected time for a step
budget; with ``--segment-steps N`` also the wall time of the whole `segment`
pipeline with an N-step budget and the plateau stopping rule (the time to the
stable minimum when it stops before N), where training stopped, and the
matched mIOU against the field's ground truth; and peak memory (RSS).

The backend must be chosen before Keras is imported, hence ``--backend``
(the same as ``KERAS_BACKEND=...``). On a GPU machine the figures are the
GPU's: see the README's speed table for the machine each figure came from.
"""
import argparse
import os
import resource
import sys
import time


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                    default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    ap.add_argument("--steps", type=int, default=40, help="timed training steps")
    ap.add_argument("--segment-steps", type=int, default=0,
                    help="also time `segment` end to end with this step budget")
    ap.add_argument("--precision", default="auto", help="UNet dtype policy (TrainConfig)")
    ap.add_argument("--init", help="--segment-steps: start training from this .keras model "
                                   "(e.g. one saved by segment --save-model on another field)")
    return ap.parse_args()


def _devices(backend):
    if backend == "tensorflow":
        import tensorflow as tf
        return [d.device_type for d in tf.config.list_physical_devices()]
    if backend == "jax":
        import jax
        return [d.platform for d in jax.devices()]
    import torch
    return ["cuda:" + torch.cuda.get_device_name(0)] if torch.cuda.is_available() else ["cpu"]


def main():
    a = _args()
    os.environ["KERAS_BACKEND"] = a.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if a.backend == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads(1)   # repeatable (set_seed)
    sys.path.insert(0, os.path.dirname(__file__))
    from _field import field_1750
    from cellnb import baseline, markers, mask, metrics, patches, pipeline, train

    f = field_1750()
    print(f"field {f.shape}, {int(f.cells.max())} cells, backend {a.backend}, "
          f"cpus={os.cpu_count()}, devices={_devices(a.backend)}", flush=True)
    mk = markers.find_markers(f.nucleus)
    m = mask.foreground_mask(f.images["fluorescence"], markers=mk)
    size, scale = patches.patch_geometry(mk, m)
    ps = patches.extract_patches(f.stack(["fluorescence"]), mk, m, size=size, scale=scale)
    n_batches = len(patches.area_batches(ps, 640))
    print(f"{len(ps)} patches of {ps.size}x{ps.size} (scale {scale:.2f}), {n_batches} areas "
          f"of 640x640 per pass", flush=True)
    t0 = time.perf_counter()
    warm = train.train(ps, train.TrainConfig(max_steps=1, precision=a.precision),
                       progress=False)
    print(f"first step (compile): {time.perf_counter() - t0:.1f} s, precision "
          f"{warm.config.precision}", flush=True)
    rows = []
    train.train(ps, train.TrainConfig(max_steps=a.steps, patience=10**6,
                                      precision=a.precision),
                model=warm.model, progress=False, callback=rows.append)
    secs = rows[-1]["seconds"] - rows[0]["seconds"]
    n = sum(r["patches"] for r in rows[1:])
    per_step = secs / (len(rows) - 1)
    print(f"training: {n / secs:.1f} patches/s, {per_step:.2f} s/step "
          f"(mean {n / (len(rows) - 1):.0f} patches/step)")
    for budget in (300, 600, 1500):
        print(f"  projected {budget} steps: {budget * per_step / 60:.1f} min", flush=True)
    if a.segment_steps:
        t0 = time.perf_counter()
        init = train.load_model(a.init)[0] if a.init else None
        out = pipeline.segment(f.images["fluorescence"], "fluorescence", nucleus=f.nucleus,
                               config=train.TrainConfig(max_steps=a.segment_steps,
                                                        precision=a.precision),
                               progress=False, log=lambda s: None, init=init)
        print(f"segment ({a.segment_steps}-step budget"
              f"{', starting from ' + a.init if a.init else ''}): "
              f"{time.perf_counter() - t0:.1f} s, "
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
