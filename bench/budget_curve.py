"""Accuracy against training budget: matched mIOU after every CHUNK steps of one model.

Usage: .venv/bin/python bench/budget_curve.py FIELD INPUTS [--chunk 300] [--chunks 3]
                                                [--set KEY=VALUE ...]
e.g.   .venv/bin/python bench/budget_curve.py field_02 fluorescence+brightfield+nucleus
       .venv/bin/python bench/budget_curve.py field_01 fluorescence --chunks 1 --set depth=4

One model is trained on the demo field with the same recipe as `segment` (markers
from the nucleus image, graph-cut mask, default patch size), CHUNK steps at a
time with the plateau rule off; after each chunk the field is integrated and
scored against its ground truth. Each chunk resumes the model and its optimizer
state, with seed = chunk number (so the first chunk equals a fresh 300-step run,
e.g. the `bench/table1.py` row). The two classical rows of Table I are printed
first for comparison. ``--set`` overrides TrainConfig fields (width, depth,
norm, precision, learning_rate, ...) to compare model choices on the same recipe.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)   # repeatable (cellnb.train.set_seed)

from cellnb import datasets, integrate, markers, mask, metrics, pipeline, train  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _field import train_overrides  # noqa: E402


def _floats(summary: dict) -> dict:
    """The float figures of `metrics.summarize`, rounded for printing."""
    return {k: round(v, 3) for k, v in summary.items() if isinstance(v, float)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("field")
    ap.add_argument("inputs", help="e.g. fluorescence or fluorescence+brightfield+nucleus")
    ap.add_argument("--chunk", type=int, default=300)
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="TrainConfig overrides, e.g. depth=4 norm=batch")
    a = ap.parse_args()
    over = train_overrides(a.set, ap.error)
    f = datasets.load_demo(a.field)[0]
    chans = pipeline.config_channels(a.inputs)
    cell = [c for c in chans if c != "nucleus"]
    mk = markers.find_markers(f.nucleus)
    m = mask.foreground_mask(f.stack(cell), [pipeline.modality_of(c) for c in cell], markers=mk)
    m_fl = m if cell == ["fluorescence"] else mask.foreground_mask(f.stack(["fluorescence"]),
                                                                   markers=mk)
    for method, name, mm in (("propagate", "classical seeded watershed (fluorescence mask)", m_fl),
                             ("nearest", "classical nearest-marker split (this mask)", m)):
        lab = pipeline.classical_labels(f, ["fluorescence"], mk, mm, method)
        print(name + ":", json.dumps(_floats(metrics.summarize(f.cells, lab))))
    ps = pipeline.field_patches(f, chans, mk, m)
    model, t0 = None, time.perf_counter()
    for k in range(a.chunks):
        res = train.train(ps, train.TrainConfig(max_steps=a.chunk, patience=10**6, seed=k,
                                                  **over),
                          model=model, progress=False)
        model = res.model
        s = metrics.summarize(f.cells, integrate.integrate(integrate.predict_patches(model, ps),
                                                           ps))
        print(json.dumps({"field": f.name, "inputs": a.inputs, "steps": (k + 1) * a.chunk,
                          "seconds": round(time.perf_counter() - t0),
                          "loss(last 20)": round(float(res.losses[-20:].mean()), 1),
                          **_floats(s)}),
              flush=True)


if __name__ == "__main__":
    main()
