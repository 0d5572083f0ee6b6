"""Real-data table: every field of every set in ../shared/data with human whole-cell truth.

Usage: .venv/bin/python bench/real_data.py [--data ../shared/data] [--sets usiigaci-phase]
           [--fields set1 set13] [--steps 300] [--mask auto|truth]
           [--markers clicked|image|corrected] [--fix background extra missing] [--offset PX]
           [--set KEY=VALUE ...] [--no-cnn] [--out runs/real_data]

For each annotated field: the unsupervised CNN (`cellnb.pipeline.segment_field` on the
field's cell channels, markers from its nucleus image or markers.csv, cellnb's mask,
integration inside the mask), then the classical seeded rows on the same markers: seeded
watershed (CellProfiler-like) and nearest-marker split, each inside cellnb's mask and inside
the mask a classical pipeline makes itself (`cellnb.baseline.classical_mask`: one Otsu
threshold). Columns: matched mIOU +- sd, AP@0.5, F1@0.5, the mask's IoU against the true
foreground, AP@0.5 on the cells that touch another cell (`cellnb.metrics.touching_ap`: the
crowded case), the objects that match no cell at IoU 0.5 by why (``fail_background``,
``fail_split``, ``fail_merged``, ``fail_outline``: `cellnb.metrics.error_kinds`; totals over
the fields in the mean table), seconds. A set with nuclei truth only (dsb2018-nuclei) gets the markers step
instead: precision / recall / F1 of `cellnb.markers.find_markers` against the human nuclei.

``--markers image`` is the no-click setting: the markers come from the phase-contrast image
itself (`cellnb.synthetic_nuclei.self_trained_markers`, what `segment` does without a
nucleus image or markers.csv), and every row (CNN and classical) uses those SAME detected
markers; two markers rows (precision / recall / F1 against the annotated cells: the dark
bodies alone, and with the self-trained detector's and the rounded cells' additions) are
written per field to OUT/real_data_markers.{csv,md}; their seconds are the whole step's. A
detected marker with no annotated cell is a false positive in every figure. The CNN then cuts
labels shaped like two cells in two and joins two pieces of one cell, as `segment --image`
does (`cellnb.pipeline.repair_found_markers`; columns ``split`` and ``joined``: how many);
the classical rows keep the detected markers alone.

``--markers corrected`` is a user's check of the detected markers before segmenting: the
markers of ``--markers image``, then `cellnb.metrics.corrected_markers` against the annotated
cells: a marker on no annotated cell deleted, a cell's second marker deleted, a cell without a
marker clicked at its deepest point (``--fix`` makes only some of the three). A third markers
row per field gives the corrected markers and the clicks each fix took. Every row then
segments with them as with clicks (no split after training, as `segment --markers`).

``--offset PX`` moves each clicked marker PX px off its cell's middle, in a random direction
inside its annotated cell (`cellnb.metrics.offset_markers`, seeded by ``--set seed=K``): the
shared clicks sit on each cell's deepest pixel, which no user hits; this measures how much the
method depends on where a cell is clicked. Every row uses the moved markers.

``--mask truth`` gives every method the true foreground as its mask: what is left is the
network's own share of the error (how it splits the foreground into cells). ``--set``
overrides TrainConfig fields (e.g. beta=3) to compare choices on the same recipe;
``--set seed=K`` also seeds the marker detector of ``--markers image`` (as ``segment --seed K``):
the spread between seeds is the yardstick for any change.

Rows are printed as measured and the table so far is written to OUT/real_data.{csv,md}
after each field; the per-method means over fields are printed and written last
(OUT/real_data_mean.{csv,md}). Cite the data's source with the figures (../shared/data/README.md).
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)   # repeatable (cellnb.train.set_seed)

from cellnb import (baseline, datasets, io, markers, metrics, pipeline,  # noqa: E402
                    synthetic_nuclei, train)
from cellnb.mask import foreground_mask, modality_of  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _field import both_rules, row, train_overrides  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def field_folders(data: Path, sets, fields):
    """(set name, field folder) of every field folder under the chosen sets."""
    for s in sorted(p for p in data.iterdir() if p.is_dir()):
        if sets and s.name not in sets:
            continue
        for f in sorted((p for p in s.iterdir() if p.is_dir()),
                        key=lambda p: (len(p.name), p.name)):
            if not fields or f.name in fields:
                yield s.name, f


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument("--sets", nargs="*")
    ap.add_argument("--fields", nargs="*")
    ap.add_argument("--steps", type=int, default=300, help="training step budget")
    ap.add_argument("--mask", choices=["auto", "truth"], default="auto")
    ap.add_argument("--markers", choices=["clicked", "image", "corrected"], default="clicked",
                    help="clicked: the field's markers.csv / nucleus image; image: found in the "
                         "phase-contrast image (no clicks); corrected: found in the image, then "
                         "corrected against the annotated cells as a user would")
    ap.add_argument("--fix", nargs="+", choices=metrics.CORRECTIONS,
                    default=list(metrics.CORRECTIONS),
                    help="with --markers corrected: which corrections the user makes")
    ap.add_argument("--offset", type=float, default=0.0, metavar="PX",
                    help="with --markers clicked: move each click PX px off its cell's middle "
                         "(random direction, inside its annotated cell)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="TrainConfig overrides, e.g. beta=3")
    ap.add_argument("--no-cnn", action="store_true", help="classical rows only")
    ap.add_argument("--out", default="runs/real_data")
    a = ap.parse_args()
    data = Path(a.data)
    if not data.is_dir():
        sys.exit(f"no real data at {data} (see the README: ../shared/data)")
    if a.offset and a.markers != "clicked":
        ap.error("--offset moves clicked markers; use it with --markers clicked")
    if not (a.offset >= 0):
        ap.error(f"--offset must be a distance in px >= 0, got {a.offset}")
    cfg = train.TrainConfig(max_steps=a.steps, **train_overrides(a.set, ap.error))
    out = Path(a.out)
    rows, marker_rows = [], []

    def emit(r):
        rows.append(r)
        print(" | ".join(f"{k} {v}" for k, v in r.items()), flush=True)

    def marker_row(set_name, field, mk, truth, t0, source, tolerance=3.0, **extra):
        """Markers against the annotated objects (nuclei, or whole cells): one row."""
        s = metrics.marker_scores(mk, truth, tolerance=tolerance)
        marker_rows.append({"set": set_name, "field": field, "source": source,
                            "objects": s["n_nuclei"], "markers": s["n_markers"],
                            "precision": round(s["precision"], 3),
                            "recall": round(s["recall"], 3), "F1": round(s["f1"], 3),
                            "seconds": round(time.perf_counter() - t0, 1), **extra})
        print("markers:", marker_rows[-1], flush=True)
        io.write_table(out / "real_data_markers.csv", marker_rows, markdown=True)

    for set_name, folder in field_folders(data, a.sets, a.fields):
        f = datasets.load_field(folder)
        if f.cells is None:
            if f.nucleus is not None and f.nuclei is not None:
                t0 = time.perf_counter()
                mk = markers.find_markers(f.nucleus)
                marker_row(set_name, f.name, mk, f.nuclei, t0, "nucleus image")
            continue
        cell = f.cell_channels
        mods = [modality_of(c) for c in cell]
        truth_fg = f.cells > 0
        t0 = time.perf_counter()
        if a.markers in ("image", "corrected"):
            # `--set seed=K` seeds the detector too, as `segment --seed K` does
            mk, n_bodies = synthetic_nuclei.self_trained_markers(
                f.images[cell[mods.index("phase")]], seed=cfg.seed,
                return_parts=True)
            marker_row(set_name, f.name, mk[:n_bodies], f.cells, t0, "phase image: dark bodies",
                       tolerance=3)
            marker_row(set_name, f.name, mk, f.cells, t0,
                       "phase image: bodies + detector + rounded cells", tolerance=3)
            if a.markers == "corrected":
                # a user's check of the detected markers before segmenting: what it takes
                mk, clicks = metrics.corrected_markers(mk, f.cells, tolerance=3, fix=a.fix)
                marker_row(set_name, f.name, mk, f.cells, t0,
                           f"corrected ({'+'.join(a.fix)})", tolerance=3, **clicks)
        else:
            mk = pipeline.field_markers(f)
            if a.offset:
                mk, moved = metrics.offset_markers(mk, f.cells, a.offset, seed=cfg.seed)
                marker_row(set_name, f.name, mk, f.cells, t0, f"clicks moved {a.offset:g} px",
                           tolerance=3, moved=moved)
        cmask = truth_fg if a.mask == "truth" else \
            foreground_mask(f.stack(cell), mods, markers=mk, hint=f.hint)
        mask_s = time.perf_counter() - t0
        own = truth_fg if a.mask == "truth" else baseline.classical_mask(f.images[cell[0]],
                                                                         mods[0])
        base = dict(set=set_name, markers=a.markers)
        if a.offset:
            base["offset"] = a.offset
        if not a.no_cnn:
            t0 = time.perf_counter()
            # detected markers miss cells, as in `segment --image`: two-lobed labels split
            res = pipeline.segment_field(f, cell, markers=mk, mask=cmask,
                                         config=cfg, split=a.markers == "image",
                                         progress=False, log=lambda s: None)
            cnn_s = time.perf_counter() - t0 + mask_s
            fit = float(np.mean(res.patches.scale * true_reach(f.cells, mk)
                                < res.patches.size / 2))
            emit(row(f.name, "CNN (unsupervised)", metrics.summarize(f.cells, res.labels),
                     mask="truth" if a.mask == "truth" else "cellnb",
                     mask_IoU=round(metrics.mask_iou(res.mask, truth_fg), 3),
                     seconds=round(cnn_s), steps=res.training.steps,
                     confident=round(res.confident, 2), retried=res.training.retried,
                     split=res.split, joined=res.joined,
                     patch=res.patches.size, scale=round(res.patches.scale, 2),
                     cells_fit=round(fit, 2), **both_rules(f.cells, res, f.stack(cell), mods,
                                                           split=a.markers == "image"),
                     touch_AP50=round(metrics.touching_ap(f.cells, res.labels)["ap"], 3),
                     **failures(f.cells, res.labels), **base))
        for mname, m in (("cellnb", cmask), ("classical", own)):
            if a.mask == "truth" and mname == "classical":
                continue
            for method, name in (("propagate", "classical seeded watershed"),
                                 ("nearest", "classical nearest-marker split")):
                t0 = time.perf_counter()
                lab = pipeline.classical_labels(f, cell, mk, m, method, seed_nuclei=False)
                secs = time.perf_counter() - t0 + (mask_s if mname == "cellnb" else 0)
                emit(row(f.name, name, metrics.summarize(f.cells, lab),
                         mask="truth" if a.mask == "truth" else mname,
                         mask_IoU=round(metrics.mask_iou(m, truth_fg), 3),
                         seconds=round(secs, 1),
                         touch_AP50=round(metrics.touching_ap(f.cells, lab)["ap"], 3),
                         **failures(f.cells, lab), **base))
        io.write_table(out / "real_data.csv", rows, markdown=True)
    if not rows:
        print("no field with whole-cell truth found", flush=True)
        return
    means = []
    for key in dict.fromkeys((r["method"], r["mask"]) for r in rows):
        sel = [r for r in rows if (r["method"], r["mask"]) == key]
        means.append({"method": key[0], "mask": key[1], "fields": len(sel),
                      **{c: round(float(np.nanmean([r[c] for r in sel])), 3)
                         for c in ("mIOU", "mIOU_sd", "AP50", "F1@0.5", "touch_AP50",
                                   "mask_IoU", "seconds")},
                      # how many objects failed, and why: totals over the fields
                      **{c: int(sum(r[c] for r in sel)) for c in FAILURES}})
    io.write_table(out / "real_data_mean.csv", means, markdown=True)
    for source in dict.fromkeys(r["source"] for r in marker_rows):
        sel = [r for r in marker_rows if r["source"] == source]
        print(f"markers from the {source}, mean over {len(sel)} fields:",
              {k: round(float(np.mean([r[k] for r in sel])), 3)
               for k in ("precision", "recall", "F1")}, flush=True)
    print(io.markdown_table(means), flush=True)


FAILURES = tuple(f"fail_{k}" for k in metrics.ERROR_KINDS[1:])


def failures(cells, lab) -> dict:
    """Counts of the predicted objects that match no cell, by why (`cellnb.metrics.error_kinds`)."""
    r = metrics.error_kinds(cells, lab)
    return {c: r[k] for c, k in zip(FAILURES, metrics.ERROR_KINDS[1:])}


def true_reach(cells, mk):
    """Reach (px, Chebyshev) of every annotated cell from the marker inside it.

    The 'cells fit' column: the fraction of true cells whose reach, at the
    working scale, is below half the patch side. A cell with no marker
    inside it is skipped.
    """
    from scipy import ndimage as ndi
    rc = np.round(mk).astype(int)
    owner = {int(cells[r, c]): (r, c) for r, c in rc if cells[r, c]}
    out = []
    for k, sl in enumerate(ndi.find_objects(cells), start=1):
        if sl is None or k not in owner:
            continue
        rr, cc = np.nonzero(cells[sl] == k)
        r0, c0 = owner[k]
        out.append(max(np.abs(rr + sl[0].start - r0).max(), np.abs(cc + sl[1].start - c0).max()))
    return np.asarray(out, float)


if __name__ == "__main__":
    main()
