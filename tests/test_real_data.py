"""Real annotated microscopy, when ../shared/data holds some (skipped cleanly otherwise).

Each set is a folder ``../shared/data/<set>/`` with a README (provenance) and field folders
in cellnb's layout (a cell image, ``nucleus.tif`` and ``cells_gt.tif``; see cellnb.datasets).
Nothing is copied into the project. The CNN (unsupervised, 300 steps, on a 512x512 crop of
the set's first annotated field) must beat the classical seeded watershed on the same
markers and mask.
"""
from pathlib import Path

import numpy as np
import pytest

from cellnb import baseline, datasets, metrics, pipeline, train
from cellnb.io import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sets():
    return sorted(p for p in SHARED.iterdir() if p.is_dir()) if SHARED.is_dir() else []


def _first_annotated(folder: Path):
    for sub in sorted(p for p in folder.rglob("*") if p.is_dir()):
        try:
            f = datasets.load_field(sub)
        except InputError:
            continue
        if f.cells is not None and f.nucleus is not None:
            return f
    return None


@pytest.mark.slow
@pytest.mark.skipif(not _sets(), reason=f"no real annotated sets in {SHARED}")
@pytest.mark.parametrize("folder", _sets(), ids=lambda p: p.name)
def test_cnn_beats_the_classical_baseline_on_real_data(folder):
    f = _first_annotated(folder)
    if f is None:
        pytest.skip(f"{folder.name}: no field in cellnb's layout with cells_gt.tif and a "
                    "nucleus image")
    crop = np.s_[:512, :512]
    g = datasets.Field(name=f.name, images={k: v[crop] for k, v in f.images.items()},
                       cells=f.cells[crop], nuclei=None)
    cell = f.cell_channels[:1]
    res = pipeline.segment_field(g, cell + ["nucleus"], config=train.TrainConfig(max_steps=300),
                                 progress=False, log=lambda s: None)
    cnn = metrics.matched_iou(g.cells, res.labels)["mean"]
    classical = baseline.propagate(g.stack(cell), res.mask, res.markers)
    base = metrics.matched_iou(g.cells, classical)["mean"]
    assert cnn > base, (folder.name, cnn, base)
