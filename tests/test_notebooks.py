"""Each numbered notebook runs headless with papermill on small parameters."""
import csv
from pathlib import Path

import nbformat
import pytest

from cellnb.__main__ import main

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "data"


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


def test_notebooks_04_05_06_train_integrate_evaluate(tmp_path):
    out = _run(tmp_path, ["04", "05", "06"],
               "fields: [field_03]\nconfigs: [fluorescence+nucleus]\nsteps: 6\n"
               "06_evaluate:\n  configs: [fluorescence, fluorescence+nucleus]\n"
               "  agreement_pair: [fluorescence, fluorescence+nucleus]\n"
               "  unseen_model_field: field_03\n  unseen_fields: [field_02]\n"
               "  unseen_config: fluorescence\n  unseen_own_model: true\n  worst_n: 3\n")
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
    # 06: Table I with the CNN rows then the two classical rows, real figures in range
    t1 = _table(out / "tables" / "06_table1.csv")
    assert [r["method"] for r in t1][:2] == ["fluorescence", "fluorescence+nucleus"]
    assert [r["method"].split(":")[0] for r in t1[2:]] == ["classical"] * 4
    assert [r["method"].rsplit(", ", 1)[1] for r in t1[2:]] == \
        ["cellnb mask", "cellnb mask", "classical mask", "classical mask"]
    for r in t1:
        assert 0 < float(r["mIOU"]) < 1 and int(r["cells"]) > 300
    agree = _table(out / "tables" / "06_agreement.csv")
    assert 0 < float(agree[0]["agreement_mIOU"]) <= 1
    unseen = _table(out / "tables" / "06_unseen.csv")
    assert [r["field"] for r in unseen] == ["field_02"] * 3
    assert [r["model"] for r in unseen] == ["model of field_03 (unseen)",
                                            "classical: seeded watershed, cellnb mask", "own model"]
    assert all(0 < float(r["mIOU"]) < 1 for r in unseen)
    assert (out / "labels" / "field_02__fluorescence__model-field_03.tif").exists()
    assert (out / "figures" / "06_iou_histogram_field_03.png").exists()
    assert (out / "figures" / "06_worst_cells_field_03.png").exists()


def test_notebook_02_synthetic_nuclei(tmp_path):
    out = _run(tmp_path, ["02"],
               "02_synthetic_nuclei:\n  train_fields: [field_01, field_02]\n"
               "  test_fields: [field_03]\n  fields: [field_03]\n  inputs: [fluorescence]\n"
               f"  pretrained: {DATA / 'models'}\n  segment_steps: 2\n")
    rows = _table(out / "tables" / "02_synthetic_markers.csv")
    assert [(r["field"], r["inputs"]) for r in rows] == [("field_03", "fluorescence")]
    assert int(rows[0]["nuclei"]) == 404 and float(rows[0]["F1"]) > 0.7
    assert (out / "markers" / "field_03__synthetic.csv").exists()
    assert (out / "figures" / "02_composite_field_03_fluorescence.png").exists()
    seg = _table(out / "tables" / "02_segmentation.csv")
    assert [r["markers"] for r in seg] == ["real", "synthetic"]
    assert [r["field"] for r in seg] == ["field_03_crop"] * 2       # the 256x256 crop
    assert all(0 < float(r["mIOU_vs_truth"]) < 1 and int(r["n_markers"]) > 50 for r in seg)


def test_notebooks_01_03_on_the_real_phase_contrast_field(tmp_path):
    """No nucleus image: markers from markers.csv, the phase-contrast mask (notebook 03)."""
    out = _run(tmp_path, ["01", "03"],
               f"data_dir: {DATA / 'real'}\nfields: [set13]\ninteractive: false\n")
    rows = _table(out / "tables" / "01_markers.csv")
    assert rows == [{"field": "set13", "source": "markers.csv", "markers": "104"}]
    assert float(_table(out / "tables" / "03_mask.csv")[0]["iou_phase"]) > 0.65   # measured 0.670
    assert (out / "masks" / "set13__phase.tif").exists()
    assert (out / "figures" / "01_markers_set13.png").exists()
    # the no-click section on the notebook's default phase field (bundled set1): the bodies, the
    # bodies with the self-trained detector's and the rounded cells' additions, the clicks,
    # each scored
    phase = _table(out / "tables" / "01_markers_phase.csv")
    assert [(r["field"], r["source"]) for r in phase] == [
        ("set1", "dark bodies (no clicks)"), ("set1", "bodies + detector + rounded cells (no clicks)"),
        ("set1", "markers.csv (clicked)"), ("set13", "set1's detector, not retrained (no clicks)")]
    assert int(phase[1]["markers"]) >= int(phase[0]["markers"]) and float(phase[2]["f1"]) == 1
    # measured 0.870 / 0.920 / 1 / 0.850 (0.870 / 0.912 / 1 / 0.850 before the detector's cut
    # followed its output at the bodies, 0.832 / 0.873 / 1 / 0.867 before one cell's split
    # bodies were joined, 0.832 / 0.834 / 1 / 0.854 with the 300-step detector, 0.832 / 0.819 /
    # 1 / 0.812 before the rounded cells)
    assert all(0.7 < float(r["f1"]) for r in phase), phase
    # clicks that would correct them (measured 15 / 13 / 0 / 30 of 66 / 66 / 66 / 104 cells)
    clicks = [int(r["clicks to correct"]) for r in phase]
    assert clicks[2] == 0 and 0 < clicks[1] < 66 // 3 and 0 < clicks[3] < 104 // 2, clicks
    # the detected markers, written for napari to correct them by hand
    napari = (out / "markers" / "set1__napari.csv").read_text().splitlines()
    assert napari[0] == "index,axis-0,axis-1" and len(napari) - 1 == int(phase[1]["markers"])
    assert (out / "figures" / "01_markers_phase_set1.png").exists()
