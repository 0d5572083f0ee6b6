"""The course site: the notebooks as executed by ``make demo``, as static HTML pages.

``make book`` (``python -m cellnb.book --run runs/demo --out runs/book``) renders every
executed notebook of a run folder with nbconvert (JupyterLab's look, figures embedded in the
page) and writes a landing page: what the method is, the order of the notebooks, how to run
them and how long each took in that run (papermill's own record). A teacher can hand out the
folder as it is; it needs no server.
"""
from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from .io import InputError, atomic_path

__all__ = ["build_book", "NOTEBOOK_TITLES"]

#: what each notebook teaches, for the landing page (file stem -> one line)
NOTEBOOK_TITLES = {
    "01_markers": "Markers: one point per cell (nucleus image, clicks, or the phase image)",
    "02_synthetic_nuclei": "Synthetic nuclei: markers without a nucleus stain",
    "03_mask": "Foreground mask: where the cells are at all",
    "04_train": "Unsupervised training: a UNet learns cells without labels (Eq. 1)",
    "05_integrate": "Integration: one label image per field",
    "06_evaluate": "Evaluation against ground truth and classical baselines",
}

_INTRO = """<p>cellnb implements <em>Unsupervised deep learning method for cell segmentation</em>
(Din &amp; Yu): a UNet learns to segment whole cells <b>without any labelled training data</b>.
One marker per cell turns a crowded field into one 64x64 patch per cell, with a Gaussian disk at
the marker; the network is trained on those patches by minimising a loss that rewards covering
pixels, penalises overlaps between patches and penalises pixels outside a foreground mask. The
notebooks below take the method one step at a time, on the bundled demo fields, then on a real
phase-contrast field with hand-drawn cells.</p>"""

_RUN = """<h2>How to run them</h2>
<pre>make demo                             # every notebook, classroom defaults -> runs/demo/
.venv/bin/jupyter lab notebooks/      # open them and move the widgets
make book                             # this site -> runs/book/index.html</pre>
<p>Each notebook has a <code>parameters</code> cell; <code>make full</code> runs the full
experiments (<code>notebooks/full.yaml</code>). Widgets show in JupyterLab; these pages are the
headless run, so each control appears as the figure of its parameter's value.</p>"""


def _duration(nb: dict) -> float | None:
    return nb.get("metadata", {}).get("papermill", {}).get("duration")


def _pages(run: Path) -> list[tuple[str, Path]]:
    """(group, executed notebook) in course order: the demo fields, then the real field."""
    out = [("demo fields", p) for p in sorted(run.glob("0[1-9]_*.ipynb"))]
    out += [("real phase-contrast field", p)
            for p in sorted((run / "real").glob("0[1-9]_*.ipynb"))]
    return out


def build_book(run: str | Path = "runs/demo", out: str | Path = "runs/book") -> Path:
    """Render the executed notebooks of `run` and a landing page into `out`.

    Parameters
    ----------
    run : path-like
        A run folder of ``cellnb run-notebooks`` (``make demo``): executed
        ``NN_*.ipynb``, and ``real/NN_*.ipynb`` if present.
    out : path-like
        Site folder; ``index.html`` and one page per notebook (``real/`` for
        the real field's) are written atomically.

    Returns
    -------
    Path
        ``out/index.html``.

    Raises
    ------
    InputError
        When `run` holds no executed notebook (run ``make demo`` first).
    """
    from nbconvert import HTMLExporter
    run, out = Path(run), Path(out)
    pages = _pages(run)
    if not pages:
        raise InputError(f"{run}: no executed notebook (NN_name.ipynb); run `make demo` first "
                         "or give --run the folder it wrote.")
    exporter = HTMLExporter(template_name="lab")
    rows, group_now = [], None
    for group, nb_path in pages:
        nb = json.loads(nb_path.read_text())
        body, _ = exporter.from_filename(str(nb_path))
        rel = nb_path.relative_to(run).with_suffix(".html")
        with atomic_path(out / rel) as tmp:
            Path(tmp).write_text(body, encoding="utf-8")
        if group != group_now:
            rows.append(f'<tr><th colspan="3">{html.escape(group)}</th></tr>')
            group_now = group
        secs = _duration(nb)
        rows.append(f'<tr><td><a href="{rel.as_posix()}">{html.escape(nb_path.stem)}</a></td>'
                    f"<td>{html.escape(NOTEBOOK_TITLES.get(nb_path.stem, ''))}</td>"
                    f"<td>{'' if secs is None else f'{secs:.0f} s'}</td></tr>")
    index = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
             "<title>cellnb: unsupervised whole-cell segmentation, step by step</title>"
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.5}"
             "td,th{padding:.3em .8em;text-align:left}th{background:#eee}</style></head><body>"
             "<h1>cellnb: unsupervised whole-cell segmentation, step by step</h1>" + _INTRO
             + "<h2>The notebooks, in order</h2><table><tr><th>notebook</th><th>step</th>"
             "<th>time in this run</th></tr>" + "".join(rows) + "</table>" + _RUN
             + "</body></html>")
    with atomic_path(out / "index.html") as tmp:
        Path(tmp).write_text(index, encoding="utf-8")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render the executed notebooks as a course site.")
    ap.add_argument("--run", default="runs/demo", help="run folder of make demo")
    ap.add_argument("--out", default="runs/book", help="site folder")
    a = ap.parse_args(argv)
    try:
        index = build_book(a.run, a.out)
    except InputError as exc:
        print(f"cellnb: error: {exc}")
        return 2
    print(f"course site -> {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
