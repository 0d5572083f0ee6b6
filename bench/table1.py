"""Paper Table I on every bundled demo field: matched mIOU of the unsupervised CNN per input set.

Usage: .venv/bin/python bench/table1.py [--fields field_01 ...] [--configs fluorescence ...]
           [--steps 300] [--seed 0] [--set KEY=VALUE ...] [--out DIR]

For each field and each input set (fluorescence; bright-field; fluorescence +
bright-field + nucleus) it runs the whole method (`cellnb.pipeline.segment_field`:
markers from the nucleus image, graph-cut mask, unsupervised training with the
default stopping rule and the given step budget, integration) and scores the
label image against the field's ground truth. Two classical rows per field use
the same markers and the fluorescence mask: seeded watershed (CellProfiler-like)
and the nearest-marker split. Each row is printed as soon as it is measured, and
the table so far is written to DIR/table1.csv and .md after every row, so an
interrupted run keeps what it measured. ``--set`` overrides TrainConfig fields (e.g.
``--set lam=2``), as in ``bench/real_data.py``.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)   # repeatable (cellnb.train.set_seed)

from cellnb import datasets, io, metrics, pipeline, train  # noqa: E402
from cellnb.mask import modality_of  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _field import both_rules, row, train_overrides  # noqa: E402

CONFIGS = ["fluorescence", "brightfield", "fluorescence+brightfield+nucleus"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", nargs="*", default=None, help="demo field names (default: all)")
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--steps", type=int, default=300, help="step budget per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="TrainConfig overrides, e.g. lam=2")
    ap.add_argument("--out", default="runs/table1")
    a = ap.parse_args()
    overrides = train_overrides(a.set, ap.error)
    rows = []

    def emit(r):
        rows.append(r)
        print(" | ".join(f"{k} {v}" for k, v in r.items()), flush=True)
        io.write_table(os.path.join(a.out, "table1.csv"), rows, markdown=True)

    for f in datasets.load_demo(a.fields):
        fl_result = None
        for config in a.configs:
            t0 = time.perf_counter()
            cell = [c for c in pipeline.config_channels(config) if c != "nucleus"]
            res = pipeline.segment_field(f, pipeline.config_channels(config),
                                         config=train.TrainConfig(**{
                                             "max_steps": a.steps, "seed": a.seed,
                                             **overrides}),
                                         progress=False, log=lambda s: None)
            emit(row(f.name, "CNN " + config, metrics.summarize(f.cells, res.labels),
                     steps=res.training.steps, stop=res.training.stop_reason,
                     confident=round(res.confident, 2), retried=res.training.retried,
                     precision=res.training.config.precision,
                     **both_rules(f.cells, res, f.stack(cell), [modality_of(c) for c in cell]),
                     seconds=round(time.perf_counter() - t0)))
            if config == "fluorescence":
                fl_result = res
        if fl_result is not None:
            for method, name in (("propagate", "classical seeded watershed"),
                                 ("nearest", "classical nearest-marker split")):
                lab = pipeline.classical_labels(f, ["fluorescence"], fl_result.markers,
                                                fl_result.mask, method)
                emit(row(f.name, name, metrics.summarize(f.cells, lab)))


if __name__ == "__main__":
    main()
