"""Command line: ``python -m cellnb <command>`` (also installed as ``cellnb``).

Commands
--------
run-notebooks   run the numbered notebook series with papermill
make-demo-data  regenerate the bundled synthetic demo fields
markers         write marker positions (CSV) from a nucleus or phase-contrast image
segment         the whole pipeline on one field -> label TIFF
evaluate        compare a label image with ground truth
train-nuclei    train a synthetic-nucleus model on fields with a nucleus image
batch           many fields x parameter sets, resumable, on Dask
"""
from __future__ import annotations

import argparse
import re
import sys
import time

from .io import MARKER_LAYOUTS, InputError

__all__ = ["main"]


def _cmd_run_notebooks(a) -> int:
    from . import runner
    from .validate import check_inputs, check_out_folder
    check_inputs({"--params": a.params})
    check_inputs({"--notebooks": a.notebooks}, folders=True)
    check_out_folder("--out", a.out, [a.notebooks])
    runner.check_params(a.params, a.only, a.notebooks)    # before any notebook starts
    t0 = time.perf_counter()
    done = runner.run_notebooks(a.out, a.params, only=a.only, folder=a.notebooks)
    print(f"ran {len(done)} notebook(s) into {a.out} in {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_make_demo(a) -> int:
    from .datasets import DEMO_FIELDS, write_demo_data
    out = write_demo_data(a.out, a.fields or list(DEMO_FIELDS))
    print(f"wrote demo fields to {out}")
    return 0


def _cmd_markers(a) -> int:
    from .io import read_image, write_markers
    from .markers import find_markers
    from .synthetic_nuclei import (load_nucleus_model, save_nucleus_model,
                                   self_trained_markers, train_marker_detector)
    from .validate import check_inputs, check_number, check_outputs
    src = a.nucleus or a.phase
    check_inputs({"--nucleus": a.nucleus, "--phase": a.phase, "--detector": a.detector})
    check_number("--sigma", a.sigma, 0, open_low=True)
    check_number("--seed", a.seed, 0, integer=True)
    check_outputs({"--out": (a.out, (".csv",)), "--save-detector": (a.save_detector, (".keras",))},
                  [src, a.detector])
    if (a.detector or a.save_detector) and not a.phase:
        raise InputError("--detector and --save-detector place the markers of a phase-contrast "
                         "image: use them with --phase.")
    if a.detector and a.save_detector:
        raise InputError("--detector applies a saved marker detector and --save-detector saves "
                         "a newly trained one; give one of them.")
    if a.nucleus:
        m = find_markers(read_image(a.nucleus), sigma=a.sigma)
    elif a.save_detector:
        image = read_image(a.phase)
        res = train_marker_detector(image, seed=a.seed)
        save_nucleus_model(res, a.save_detector, trained_on=[a.phase], role="marker detector")
        print(f"marker detector -> {a.save_detector}", file=sys.stderr)
        m = self_trained_markers(image, detector=res.model)
    else:
        detector = load_nucleus_model(a.detector, role="marker detector")[0] if a.detector \
            else None
        # without a detector this trains one; it says on stderr when it keeps the bodies
        m = self_trained_markers(read_image(a.phase), seed=a.seed, detector=detector)
    write_markers(a.out, m, layout=a.layout)
    print(f"{len(m)} markers -> {a.out}")
    return 0


def _cmd_segment(a) -> int:
    from .datasets import check_hint
    from .io import read_image, read_labels, read_markers, write_labels, write_table
    from .integrate import cell_table
    from .pipeline import modality_of, segment
    from .train import TrainConfig, TrainingInterrupted, load_model, save_model
    from .validate import check_inputs, check_number, check_outputs
    t0 = time.perf_counter()
    inputs = [*a.image, a.nucleus, a.markers, a.mask, a.model, a.nucleus_model, a.hint,
              a.init, a.detector]
    check_inputs({"--image": a.image, "--nucleus": a.nucleus, "--markers": a.markers,
                  "--mask": a.mask, "--model": a.model, "--nucleus-model": a.nucleus_model,
                  "--hint": a.hint, "--init": a.init, "--detector": a.detector})
    if a.model and a.init:
        raise InputError("--model applies a trained model without training and --init / "
                         "--resume trains from one; give one of them.")
    check_outputs({"--out": (a.out, (".tif", ".tiff")), "--table": (a.table, (".csv",)),
                   "--save-model": (a.save_model, (".keras",))}, inputs)
    check_number("--steps", a.steps, 1, integer=True)
    check_number("--seed", a.seed, 0, integer=True)
    check_number("--threshold", a.threshold, 0, 1, open_low=True, open_high=True)
    check_number("--stable", a.stable, 0, 1, open_low=True)
    if a.save_model and a.model:
        raise InputError("--save-model saves a trained model, but --model applies one without "
                         "training; drop one of them.")
    synthetic = a.markers_from == "synthetic"
    if synthetic and not a.nucleus_model:
        raise InputError("--markers-from synthetic needs --nucleus-model MODEL.keras (trained "
                         "in notebook 02).")
    if a.nucleus_model and not synthetic:
        raise InputError("--nucleus-model is used with --markers-from synthetic.")
    if a.detector and (synthetic or a.nucleus or a.markers):
        raise InputError("--detector places the markers of a phase-contrast --image; drop "
                         "--nucleus / --markers / --markers-from synthetic, or drop --detector.")
    if synthetic and (a.nucleus or a.markers):
        raise InputError("--markers-from synthetic makes the markers from the cell image; "
                         "drop --nucleus / --markers (or use --markers-from nucleus).")
    images = [read_image(p) for p in a.image]
    for p, im in zip(a.image, images):
        if im.ndim != 2:
            raise InputError(f"{p}: has {im.shape[-1]} channels; pass each channel as its own "
                             "--image file.")
    mods = a.modality or [modality_of(p) for p in a.image]
    if len(mods) != len(images):
        raise InputError(f"{len(images)} --image but {len(mods)} --modality values; give one "
                         "per image or none.")
    if a.detector and "phase" not in mods:
        raise InputError(f"--detector places markers in a phase-contrast image, but the "
                         f"--image modalities are {mods}; name the file phase*.tif or give "
                         "--modality phase.")
    if not synthetic and a.nucleus is None and a.markers is None and "phase" not in mods:
        raise InputError("segment needs --nucleus NUC.tif, --markers markers.csv or "
                         "--markers-from synthetic --nucleus-model M.keras to place one marker "
                         "per cell (only a phase-contrast --image places them itself).")
    nucleus = read_image(a.nucleus) if a.nucleus else None
    markers = read_markers(a.markers, shape=images[0].shape) if a.markers else None
    hint = check_hint(read_labels(a.hint), shape=images[0].shape, name=a.hint) if a.hint \
        else None
    if synthetic:
        import numpy as np
        from .synthetic_nuclei import load_nucleus_model, predict_nuclei, synthetic_markers
        nmodel, nmeta = load_nucleus_model(a.nucleus_model)
        if nmodel.input_shape[-1] != len(images):
            raise InputError(f"{a.nucleus_model}: takes {nmodel.input_shape[-1]} channel(s) "
                             f"({nmeta.get('channels')}), but {len(images)} --image were given; "
                             "pass the channels it was trained on, in that order.")
        markers = synthetic_markers(predict_nuclei(nmodel, np.stack(images, -1)),
                                    nmeta.get("radius"))
        print(f"[cellnb] {len(markers)} markers from the synthetic nucleus image",
              file=sys.stderr)
    detector = None
    if a.detector:
        from .synthetic_nuclei import load_nucleus_model
        detector = load_nucleus_model(a.detector, role="marker detector")[0]
    mask = read_labels(a.mask) > 0 if a.mask else None
    model = load_model(a.model)[0] if a.model else None
    init = load_model(a.init)[0] if a.init else None
    cfg = TrainConfig(max_steps=a.steps, seed=a.seed, precision=a.precision, stable=a.stable)
    try:
        res = segment(images, mods, nucleus=nucleus, markers=markers, mask=mask,
                      use_nucleus=a.use_nucleus, config=cfg, model=model, progress=not a.quiet,
                      hint=hint, background=a.background, threshold=a.threshold, init=init,
                      detector=detector)
    except TrainingInterrupted as stop:
        if a.save_model and stop.result.steps:
            save_model(stop.result, a.save_model)
            print(f"cellnb: interrupted after {stop.result.steps} training steps; the model "
                  f"so far is in {a.save_model}: continue with --resume {a.save_model}",
                  file=sys.stderr)
        else:
            print(f"cellnb: interrupted after {stop.result.steps} training steps (nothing "
                  "saved: give --save-model to keep an interrupted training)", file=sys.stderr)
        return 130
    write_labels(a.out, res.labels, protect=[p for p in inputs if p])
    if a.table:
        write_table(a.table, cell_table(res.labels, res.markers,
                                        dict(zip([f"image{i + 1}" for i in range(len(images))],
                                                 images))))
    if a.save_model and res.training is not None:
        save_model(res.training, a.save_model, confident=round(res.confident, 3))
    print(f"{res.n_cells} cells, {len(res.markers)} markers, "
          f"{time.perf_counter() - t0:.1f} s -> {a.out}")
    return 0


def _cmd_evaluate(a) -> int:
    import json
    from .io import read_labels
    from .metrics import ERROR_KINDS, error_kinds, summarize
    from .validate import check_inputs
    check_inputs({"--pred": a.pred, "--truth": a.truth})
    pred, truth = read_labels(a.pred), read_labels(a.truth)
    out = summarize(truth, pred)
    kinds = error_kinds(truth, pred)
    out["failures"] = {k: kinds[k] for k in (*ERROR_KINDS[1:], "uncovered")}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"mIOU {out['mIOU']:.3f} +- {out['mIOU_sd']:.3f} over {out['n_truth']} true "
              f"cells ({out['missed']} missed, best IoU < 0.5)")
        print(f"AP@0.5 {out['AP50']:.3f}  F1@0.5 {out['F1@0.5']:.3f}  mAP(0.5:0.9) {out['mAP']:.3f}")
        print("thresh  tp  fp  fn  precision recall  f1    ap")
        for r in out["by_threshold"]:
            print(f"{r['thresh']:.2f} {r['tp']:5d} {r['fp']:3d} {r['fn']:3d}  {r['precision']:.3f}"
                  f"     {r['recall']:.3f}  {r['f1']:.3f} {r['ap']:.3f}")
        w = out["failures"]
        print(f"unmatched at 0.5, by why: {w['background']} on background, {w['split']} pieces "
              f"of a split cell, {w['merged']} over two cells, {w['outline']} with the outline "
              f"off; {w['uncovered']} true cells uncovered")
    return 0


def _cmd_train_nuclei(a) -> int:
    from .datasets import load_field
    from .pipeline import config_channels
    from .synthetic_nuclei import (NucleusConfig, nucleus_target, save_nucleus_model,
                                   train_nucleus_model)
    from .validate import check_inputs, check_number, check_outputs
    check_inputs({"--fields": a.fields}, folders=True)
    check_outputs({"--out": (a.out, (".keras",))}, a.fields)
    check_number("--steps", a.steps, 1, integer=True)
    check_number("--seed", a.seed, 0, integer=True)
    check_number("--tile", a.tile, 16, integer=True)
    if a.tile % 8:
        raise InputError(f"--tile {a.tile}: must be a multiple of 8 (the UNet pools 3 times).")
    t0 = time.perf_counter()
    fields = [load_field(p) for p in a.fields]
    chans = config_channels(a.inputs)
    for f in fields:
        missing = [c for c in chans if c not in f.images] + ([] if f.nucleus is not None
                                                            else ["nucleus"])
        if missing:
            raise InputError(f"{f.path}: no {missing} image; training needs the cell channels "
                             "and a nucleus image in every field.")
    res = train_nucleus_model([f.stack(chans) for f in fields],
                              [nucleus_target(f.nucleus) for f in fields],
                              NucleusConfig(max_steps=a.steps, tile=a.tile, seed=a.seed),
                              channels=chans, progress=not a.quiet)
    save_nucleus_model(res, a.out, trained_on=[f.name for f in fields])
    print(f"{len(res.history)} steps ({res.stop_reason}), cross-entropy "
          f"{res.losses[-25:].mean():.3f}, {time.perf_counter() - t0:.0f} s -> {a.out}")
    return 0


def _cmd_batch(a) -> int:
    from .batch import load_grid, run_batch
    from .runner import load_params
    from .validate import check_inputs, check_number, check_out_folder
    check_inputs({"--fields": a.fields}, folders=True)
    check_inputs({"--params": a.params, "--grid": a.grid})
    check_out_folder("--out", a.out, a.fields)
    check_number("--workers", a.workers, 1, integer=True)
    check_number("--train-on", a.train_on, 0, integer=True)
    check_number("--seed", a.seed, 0, integer=True)
    if a.threads is not None:
        check_number("--threads", a.threads, 1, integer=True)
    if a.scheduler and not re.match(r"^(tcp|tls|inproc|ucx)://\S+$|^[\w.-]+:\d+$",
                                    a.scheduler):
        raise InputError(f"--scheduler {a.scheduler}: expected an address like "
                         "tcp://127.0.0.1:8786.")
    grid = load_grid(a.grid) if a.grid else None
    t0 = time.perf_counter()
    rows = run_batch(a.fields, a.out, load_params(a.params), grid, mode=a.mode,
                     workers=a.workers, scheduler=a.scheduler, threads=a.threads, force=a.force,
                     train_on=a.train_on, only=a.only, seed=a.seed, progress=not a.quiet)
    failed = [r for r in rows if r["status"] == "failed"]
    warned = [r["run"] for r in rows if r.get("warning")]
    print(f"{len(rows)} runs ({len(failed)} failed) in {time.perf_counter() - t0:.0f} s -> "
          f"{a.out}/index.md")
    if warned:
        print(f"cellnb: {len(warned)} run(s) trained a network that is not confident (see the "
              f"warning column of index.md): {', '.join(warned)}", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cellnb", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run-notebooks", help="run the numbered notebooks with papermill")
    p.add_argument("--params", help="YAML parameter file")
    p.add_argument("--out", required=True, help="run folder for executed notebooks and results")
    p.add_argument("--only", nargs="+", help="notebook numbers or names to run (default: all)")
    p.add_argument("--notebooks", help="notebook folder (default: the repository's)")
    p.set_defaults(func=_cmd_run_notebooks)

    p = sub.add_parser("make-demo-data", help="regenerate the synthetic demo fields")
    p.add_argument("--out", default="data/demo")
    p.add_argument("--fields", nargs="+", help="subset of demo field names")
    p.set_defaults(func=_cmd_make_demo)

    p = sub.add_parser("markers", help="marker CSV from a nucleus or phase-contrast image")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--nucleus", help="nucleus image: one marker per nucleus")
    g.add_argument("--phase", help="phase-contrast cell image: one marker per cell, from its "
                   "dark bodies and a detector trained on them (~20-40 s per 1024 px field, "
                   "2 cores)")
    p.add_argument("--out", required=True)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--save-detector", metavar="DET.keras",
                   help="with --phase: also save the trained marker detector, to place the "
                        "markers of the next images of the same kind with --detector (e.g. "
                        "the other frames of a time-lapse)")
    p.add_argument("--detector", metavar="DET.keras",
                   help="with --phase: apply this saved marker detector instead of training "
                        "one (the 20-40 s of training are skipped)")
    p.add_argument("--seed", type=int, default=0, help="seeds the marker detector's training")
    p.add_argument("--layout", choices=list(MARKER_LAYOUTS), default="cellnb",
                   help="CSV columns: id,row,col (cellnb), or index,axis-0,axis-1, which napari "
                        "opens as a points layer to correct by hand (segment --markers reads "
                        "both)")
    p.set_defaults(func=_cmd_markers)

    p = sub.add_parser("segment", help="whole pipeline on one field -> label TIFF")
    p.add_argument("--image", action="append", required=True,
                   help="cell image (2-D); repeat for more channels")
    p.add_argument("--modality", action="append",
                   choices=["fluorescence", "brightfield", "phase", "dic"],
                   help="per --image (default: from the file name: phase*, dic*, bright*/bf* "
                        "are transmitted light, anything else fluorescence)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--nucleus", help="nucleus image (markers from it)")
    g.add_argument("--markers", help="marker CSV, one point per cell: row,col (cellnb), "
                   "X,Y (Fiji multi-point Measure, pixels) or axis-0,axis-1 (napari points)")
    p.add_argument("--markers-from", choices=["nucleus", "synthetic"], default="nucleus",
                   help="synthetic: markers from a synthetic nucleus image (notebook 02). "
                   "Without --nucleus and --markers, a phase-contrast --image places one "
                   "marker per cell itself (cellnb.synthetic_nuclei.self_trained_markers)")
    p.add_argument("--nucleus-model", help="synthetic-nucleus model (.keras) for "
                   "--markers-from synthetic")
    p.add_argument("--detector", metavar="DET.keras",
                   help="markers of a phase-contrast --image from this saved marker detector "
                        "(cellnb markers --phase ... --save-detector) instead of training one")
    p.add_argument("--use-nucleus", action="store_true",
                   help="also train on the nucleus image (needs --nucleus)")
    p.add_argument("--mask", help="foreground mask TIFF (default: graph cut)")
    p.add_argument("--hint", help="hint TIFF for the mask: a few pixels labelled 1 (cell) and "
                   "2 (background), 0 elsewhere, for fields where the automatic mask fails")
    p.add_argument("--background", choices=["mask", "threshold"], default="mask",
                   help="integration: background outside the mask, each mask pixel to its "
                        "most probable cell (default), or the paper's rule, below "
                        "--threshold in every patch")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability threshold of --background threshold")
    p.add_argument("--model", help="apply this trained .keras model instead of training")
    p.add_argument("--init", "--resume", dest="init", metavar="MODEL",
                   help="start training from this .keras model's weights: a training saved "
                        "when it was interrupted (Ctrl-C), or your own model trained on fields "
                        "like these (same channels)")
    p.add_argument("--save-model", help="save the trained model here (.keras); also saved "
                   "when the training is interrupted with Ctrl-C")
    p.add_argument("--out", required=True, help="label TIFF to write")
    p.add_argument("--table", help="per-cell CSV (area, centroid, mean intensities)")
    p.add_argument("--steps", type=int, default=300,
                   help="training step budget (training stops earlier once the labels are "
                        "stable; 300 bounds the time: about 2 minutes on a 1000x1000 field on "
                        "2 CPU cores)")
    p.add_argument("--stable", type=float, default=0.9,
                   help="stop training when two looks in a row find the cells overlapping the "
                        "previous look's by at least this IoU (default 0.9; 1 trains on to the "
                        "loss plateau or the step budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto",
                   choices=["auto", "float32", "mixed_bfloat16"],
                   help="UNet dtype policy; auto = bfloat16 where the hardware has it "
                        "(float32: closest results across machine kinds)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("train-nuclei", help="synthetic-nucleus model from (cell, nucleus) "
                       "image pairs")
    p.add_argument("--fields", nargs="+", required=True, help="field folders to learn from")
    p.add_argument("--inputs", default="fluorescence",
                   help="cell channels, e.g. fluorescence or fluorescence+brightfield")
    p.add_argument("--out", required=True, help="model file to write (.keras)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train_nuclei)

    p = sub.add_parser("batch", help="many fields x parameter sets on Dask, resumable")
    p.add_argument("--fields", nargs="+", required=True,
                   help="plate folder(s), field folder(s) or a text file listing them")
    p.add_argument("--params", help="base parameters (YAML)")
    p.add_argument("--grid", help="parameter grid (YAML: name: [values], or a list of sets)")
    p.add_argument("--out", required=True, help="batch folder (index.csv, runs/, failed/)")
    p.add_argument("--mode", choices=["segment", "notebooks"], default="segment")
    p.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler")
    p.add_argument("--threads", type=int, help="TensorFlow threads per run (default: "
                   "cores / workers)")
    p.add_argument("--train-on", type=int, default=0, metavar="K",
                   help="segment mode: train one model on K sampled fields, apply it to all")
    p.add_argument("--only", nargs="+", help="notebooks mode: notebooks to run")
    p.add_argument("--force", action="store_true", help="redo finished runs")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing --train-on fields")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("evaluate", help="metrics of a label image against ground truth")
    p.add_argument("--pred", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)
    return ap


def _import_keras_quietly() -> None:
    """Import Keras (and its backend) with the backend's start-up log lines filtered out.

    TensorFlow prints its oneDNN / CPU-feature notices to stderr at import, whatever
    TF_CPP_MIN_LOG_LEVEL says; they tell a user nothing. Real warnings pass.
    """
    import os
    from .runner import quiet_stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import keras  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.command in ("segment", "train-nuclei"):
        _import_keras_quietly()
    try:
        return a.func(a)
    except InputError as exc:
        msg = " ".join(str(exc).split())        # one line, whatever a library said
        print(f"cellnb: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .runner import NotebookFailed
        if isinstance(exc, NotebookFailed):
            print(f"cellnb: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
