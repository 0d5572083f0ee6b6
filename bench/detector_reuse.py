"""One marker detector for many images: a detector trained on one field, applied to the others.

Usage: .venv/bin/python bench/detector_reuse.py [--data ../shared/data/usiigaci-phase]
           [--train set1 set13 set30] [--fields ...] [--segment] [--out runs/detector_reuse]

A time-lapse or a plate of phase-contrast fields of one kind need not train the marker
detector (`cellnb.synthetic_nuclei.train_marker_detector`, 35-60 s on 2 cores) on every
image: `cellnb markers --phase first.tif --save-detector det.keras`, then `--detector
det.keras` for the others. This measures what that costs in accuracy: for every field, the
markers' precision / recall / F1 against the annotated cells with the field's own detector
(what `segment` does by default) and with the detector of each `--train` field (by default
one crowded, one medium, one sparse field of the Usiigaci set), plus the seconds of training
one detector and of placing one field's markers with a trained one. Every field is a
different time-lapse of the set, so this is a harder test than the frames of one time-lapse.

``--segment`` also runs the whole no-click `segment` on every field twice: as `segment
--image phase.tif` does by default (the field's own detector, a network trained on the field),
and with nothing trained on the field at all (the first --train field's detector and the
network trained there: `segment --detector det.keras --model model.keras`); mIOU, AP@0.5 and
seconds of each, against the annotated cells.

Prints the table as it goes and writes OUT/detector_reuse.{csv,md}. Cite the data's source
with the figures (../shared/data/README.md).
"""
import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)   # repeatable (cellnb.train.set_seed)

from cellnb import io, metrics, pipeline, synthetic_nuclei  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "usiigaci-phase"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument("--train", nargs="+", default=["set1", "set13", "set30"],
                    help="fields whose detector is applied to every field")
    ap.add_argument("--fields", nargs="+", help="default: every field folder in --data")
    ap.add_argument("--segment", action="store_true",
                    help="also segment every field with its own training and with none")
    ap.add_argument("--out", default="runs/detector_reuse")
    a = ap.parse_args(argv)
    data = Path(a.data)
    if not data.is_dir():
        sys.exit(f"no real data at {data} (see the README: ../shared/data)")
    names = a.fields or sorted((p.name for p in data.iterdir() if (p / "cells_gt.tif").exists()),
                               key=lambda n: (len(n), n))
    missing = [n for n in a.train if not (data / n / "phase.tif").exists()]
    if missing:
        sys.exit(f"--train: no phase.tif for {missing} in {data}")
    images = {n: io.read_image(data / n / "phase.tif") for n in dict.fromkeys(names + a.train)}
    truth = {n: io.read_labels(data / n / "cells_gt.tif") for n in names}
    detectors, train_s = {}, {}
    for n in dict.fromkeys(a.train + names):      # the --train fields first
        t = time.perf_counter()
        detectors[n] = synthetic_nuclei.train_marker_detector(images[n]).model
        train_s[n] = time.perf_counter() - t
        print(f"trained the detector on {n} in {train_s[n]:.0f} s", flush=True)
    quiet = dict(progress=False, log=lambda s: None)
    model = None
    if a.segment:         # the network trained on the first --train field, with its markers
        t = time.perf_counter()
        model = pipeline.segment(images[a.train[0]], "phase", detector=detectors[a.train[0]],
                                 **quiet).training.model
        print(f"trained the network on {a.train[0]} in {time.perf_counter() - t:.0f} s",
              flush=True)
    rows = []
    for n in names:
        row = {"field": n, "cells": int(truth[n].max()), "train_s": round(train_s[n], 1)}
        scores = {}
        for src in dict.fromkeys([n] + a.train):     # a --train field's own detector once
            t = time.perf_counter()
            mk = synthetic_nuclei.self_trained_markers(images[n], detector=detectors[src])
            secs = time.perf_counter() - t
            scores[src] = metrics.marker_scores(mk, truth[n])
            if src == n:
                row["apply_s"] = round(secs, 1)
        for key, src in [("own", n)] + [(f"from_{s}", s) for s in a.train]:
            row.update({f"{key}_{k}": round(scores[src][k], 3)
                        for k in ("precision", "recall", "f1")})
        if a.segment:
            for key, kw in (("own", dict(detector=detectors[n])),
                            ("shared", dict(detector=detectors[a.train[0]], model=model))):
                t = time.perf_counter()
                # the own detector is what segment trains itself (same seed), reused to save time
                res = pipeline.segment(images[n], "phase", **kw, **quiet)
                secs = time.perf_counter() - t + (train_s[n] if key == "own" else 0.0)
                sm = metrics.summarize(truth[n], res.labels)
                row.update({f"seg_{key}_mIOU": round(sm["mIOU"], 3),
                            f"seg_{key}_AP50": round(sm["AP50"], 3),
                            f"seg_{key}_s": round(secs, 1)})
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "detector_reuse.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    srcs = ["own"] + [f"from_{s}" for s in a.train]
    lines = ["| field (cells) | own detector: P / R / F1 | "
             + " | ".join(f"detector of {s}: F1" for s in a.train)
             + " | s to train one | s to place markers with one |",
             "|---|---|" + "---|" * len(a.train) + "---|---|"]
    for r in rows:
        lines.append(f"| {r['field']} ({r['cells']}) | {r['own_precision']:.3f} / "
                     f"{r['own_recall']:.3f} / {r['own_f1']:.3f} | "
                     + " | ".join(f"{r[f'{s}_f1']:.3f}" for s in srcs[1:])
                     + f" | {r['train_s']:.0f} | {r['apply_s']:.1f} |")
    means = {s: np.mean([r[f"{s}_f1"] for r in rows]) for s in srcs}
    lines.append(f"| mean F1 | {means['own']:.3f} | "
                 + " | ".join(f"{means[s]:.3f}" for s in srcs[1:]) + " | | |")
    if a.segment:
        lines += ["", f"| field | segment, trained on the field: mIOU / AP@0.5 / s | nothing "
                      f"trained on the field ({a.train[0]}'s detector and network): mIOU / "
                      "AP@0.5 / s |", "|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['field']} | " + " | ".join(
                f"{r[f'seg_{k}_mIOU']:.3f} / {r[f'seg_{k}_AP50']:.3f} / {r[f'seg_{k}_s']:.0f}"
                for k in ("own", "shared")) + " |")
        lines.append("| mean | " + " | ".join(
            " / ".join(f"{np.mean([r[f'seg_{k}_{m}'] for r in rows]):.3f}" for m in ("mIOU", "AP50"))
            + f" / {np.mean([r[f'seg_{k}_s'] for r in rows]):.0f}" for k in ("own", "shared")) + " |")
    (out / "detector_reuse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
