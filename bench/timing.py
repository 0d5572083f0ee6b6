"""How long the teaching material and the method take on this machine (issue 18's figures).

Usage: .venv/bin/python bench/timing.py [--parts notebooks demo field1750 real noclick]
           [--real-fields set1 set13 ...] [--out runs/timing]

Parts (each prints one line per measurement as it is made, and the table so far is written
to OUT/timing.{csv,md}):

* ``notebooks``: every numbered notebook alone, *Run All* with its own parameter cell's
  defaults (headless: ``interactive: false``), each in a fresh run folder, so a notebook that
  needs an earlier step's result makes it itself, as a student's first *Run All* would.
* ``demo``: ``make demo``'s two commands (notebooks/demo.yaml, then demo_real.yaml) into a
  fresh folder, wall time.
* ``field1750``: ``segment`` with its defaults (training stops once the labels are stable) on
  the paper-sized 1750x1750 synthetic field (bench/_field.py), time to that stable
  segmentation and matched mIOU against the field's truth.
* ``real``: ``segment`` with its defaults on every real field in ../shared/data/usiigaci-phase
  (markers.csv), seconds and mIOU / AP@0.5 against the hand-drawn cells.
* ``noclick``: the same with the phase-contrast image alone (``segment --image phase.tif``: the
  markers come from the image, the marker detector is trained on it), the issue-20 setting.

The note column says how many steps the training ran and why it stopped (``stable``,
``max_steps``, and ``retried`` when a start was given up as unsure and tried again).

Times are wall clock on whatever runs it; the README's figures name the machine. Each run's
folder stays under OUT/work (executed notebooks, tables, label images) for a look afterwards.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SHARED = ROOT.parent / "shared" / "data" / "usiigaci-phase"
NOTEBOOKS = ["01", "02", "03", "04", "05", "06"]


def _run(cmd, cwd=ROOT, output: bool = False):
    """Wall seconds of `cmd` (and its stderr with `output`); exits with its output if it fails."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    sec = time.perf_counter() - t0
    return (sec, res.stderr) if output else sec


def notebooks(work: Path):
    (work / "headless.yaml").write_text("interactive: false\n")
    for nb in NOTEBOOKS:
        sec = _run([PY, "-m", "cellnb", "run-notebooks", "--params", work / "headless.yaml",
                    "--out", work / f"nb{nb}", "--only", nb])
        yield {"what": f"notebook {nb}, Run All, own defaults", "seconds": round(sec)}


def demo(work: Path):
    out = work / "demo"
    t0 = time.perf_counter()
    _run([PY, "-m", "cellnb", "run-notebooks", "--params", "notebooks/demo.yaml", "--out", out])
    first = time.perf_counter() - t0
    _run([PY, "-m", "cellnb", "run-notebooks", "--params", "notebooks/demo_real.yaml", "--out",
          out / "real", "--only", "01", "03", "04", "05", "06"])
    yield {"what": "make demo (demo.yaml + demo_real.yaml, install not counted)",
           "seconds": round(time.perf_counter() - t0),
           "note": f"synthetic part {first:.0f} s"}


def _segment_row(what, folder: Path, images, extra, work: Path):
    from cellnb import io, metrics
    out = work / f"{folder.name}.tif"
    args = [PY, "-m", "cellnb", "segment", "--out", out, "--quiet", *extra]
    for im in images:
        args += ["--image", folder / im]
    sec, err = _run(args, output=True)
    s = metrics.summarize(io.read_labels(folder / "cells_gt.tif"), io.read_labels(out))
    trained = re.findall(r"trained (\d+ steps \(\w+\))", err)
    note = trained[-1] if trained else ""
    if "training again" in err:
        note += ", retried"
    return {"what": what, "seconds": round(sec), "mIOU": round(s["mIOU"], 3),
            "AP50": round(s["AP50"], 3), "note": note}


def field1750(work: Path):
    sys.path.insert(0, str(ROOT / "bench"))
    from _field import CACHE, field_1750
    field_1750()
    yield _segment_row("segment, 1750x1750 synthetic field, defaults (to the stable minimum)",
                       CACHE, ["fluorescence.tif"], ["--nucleus", CACHE / "nucleus.tif"], work)


def real(work: Path, fields=None, clicks: bool = True):
    if not SHARED.exists():
        print(f"skipped: {SHARED} not found", file=sys.stderr)
        return
    if not clicks:
        (work / "noclick").mkdir(exist_ok=True)
    for f in sorted((p for p in SHARED.iterdir() if p.is_dir()),
                    key=lambda p: (len(p.name), p.name)):
        if fields and f.name not in fields:
            continue
        if clicks:
            yield _segment_row(f"segment, Usiigaci {f.name}, defaults, markers.csv", f,
                               ["phase.tif"], ["--markers", f / "markers.csv"], work)
        else:
            yield _segment_row(f"segment, Usiigaci {f.name}, defaults, no markers (from the "
                               "image)", f, ["phase.tif"], [], work / "noclick")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*",
                    default=["notebooks", "demo", "field1750", "real", "noclick"],
                    choices=["notebooks", "demo", "field1750", "real", "noclick"])
    ap.add_argument("--real-fields", nargs="*", help="Usiigaci fields (default: all)")
    ap.add_argument("--out", default="runs/timing")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cellnb import io
    rows = []
    work = Path(a.out) / "work"          # the runs' own folders, kept for a look afterwards
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for part in a.parts:
        if part in ("real", "noclick"):
            gen = real(work, a.real_fields, clicks=part == "real")
        else:
            gen = globals()[part](work)
        for r in gen:
            rows.append(r)
            print(" | ".join(f"{k} {v}" for k, v in r.items()), flush=True)
            io.write_table(Path(a.out) / "timing.csv",
                           [{k: r.get(k, "") for k in ("what", "seconds", "mIOU", "AP50", "note")}
                            for r in rows], markdown=True)


if __name__ == "__main__":
    main()
