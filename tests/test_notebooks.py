"""Each numbered notebook runs headless with papermill on small parameters."""
import csv

import nbformat
import pytest

from cellnb.__main__ import main

pytestmark = pytest.mark.slow


def _run(tmp_path, only, yaml_text):
    (tmp_path / "p.yaml").write_text(yaml_text)
    out = tmp_path / "run"
    assert main(["run-notebooks", "--params", str(tmp_path / "p.yaml"), "--out", str(out),
                 "--only", *only]) == 0
    for nb_name in only:
        nb_path = next(out.glob(f"{nb_name}_*.ipynb"))
        nb = nbformat.read(nb_path, as_version=4)
        assert not any(o.get("output_type") == "error"
                       for c in nb.cells for o in c.get("outputs", []))
    return out


def _table(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_notebook_03_mask(tmp_path):
    out = _run(tmp_path, ["03"], "fields: [field_02]\ninteractive: false\n")
    rows = _table(out / "tables" / "03_mask.csv")
    assert [r["field"] for r in rows] == ["field_02"]
    assert float(rows[0]["iou_fluorescence"]) > 0.86
    assert float(rows[0]["iou_brightfield"]) > 0.81
    assert (out / "masks" / "field_02__fluorescence+brightfield.tif").exists()
    assert (out / "masks" / "field_02__brightfield.tif").exists()
    assert (out / "figures" / "03_mask_field_02_brightfield.png").exists()


def test_notebooks_04_05_train_and_integrate(tmp_path):
    out = _run(tmp_path, ["04", "05"],
               "fields: [field_03]\nconfigs: [fluorescence+nucleus]\nsteps: 6\n")
    rows = _table(out / "tables" / "04_train.csv")
    assert rows[0]["inputs"] == "fluorescence+nucleus" and int(rows[0]["steps"]) == 6
    assert (out / "models" / "field_03__fluorescence+nucleus.keras").exists()
    assert (out / "figures" / "04_loss.png").exists()
    assert (out / "figures" / "04_patches_field_03.png").exists()
    import tifffile
    lab = tifffile.imread(out / "labels" / "field_03__fluorescence+nucleus.tif")
    assert lab.shape == (512, 512) and lab.max() > 0
    cells = _table(out / "cells" / "field_03__fluorescence+nucleus.csv")
    markers = (out / "markers" / "field_03.csv").read_text().splitlines()
    assert len(cells) == len(markers) - 1        # one row per marker, ids in marker order
    assert (out / "figures" / "05_labels_field_03_fluorescence+nucleus.png").exists()
