"""The course site (`make book`) from a run folder of executed notebooks."""
import base64
import io as _io

import nbformat
import pytest

from cellnb import book
from cellnb.io import InputError


def _png() -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path, title, secs):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png()})]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), cell]
    nb.metadata["papermill"] = {"duration": secs}
    nbformat.write(nb, str(path))


def test_book_pages_and_landing(tmp_path):
    run = tmp_path / "run"
    (run / "real").mkdir(parents=True)
    _executed(run / "01_markers.ipynb", "Markers", 4.6)
    _executed(run / "04_train.ipynb", "Train", 159.2)
    _executed(run / "real" / "05_integrate.ipynb", "Integrate", 30.0)
    index = book.build_book(run, tmp_path / "site")
    text = index.read_text()
    for href in ("01_markers.html", "04_train.html", "real/05_integrate.html"):
        assert f'href="{href}"' in text and (tmp_path / "site" / href).exists()
    assert "159 s" in text and "real phase-contrast field" in text and "make demo" in text
    page = (tmp_path / "site" / "04_train.html").read_text()
    assert "data:image/png;base64," in page and "Train" in page      # figures embedded


def test_book_without_a_run_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="make demo"):
        book.build_book(tmp_path, tmp_path / "site")
    assert book.main(["--run", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
