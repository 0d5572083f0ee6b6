import numpy as np
import pytest

from cellnb import metrics
from cellnb.io import InputError


def test_marker_scores_known_answer():
    nuc = np.zeros((30, 30), int)
    nuc[2:6, 2:6] = 1
    nuc[10:14, 10:14] = 2
    nuc[20:24, 20:24] = 3
    m = [[3, 3], [4, 4],      # two in nucleus 1: one TP, one FP (over-split)
         [11, 11],            # TP
         [15.5, 12],          # 2 px below nucleus 2 -> within tolerance, but 2 is taken: FP
         [28, 2]]             # background: FP; nucleus 3 missed: FN
    s = metrics.marker_scores(m, nuc, tolerance=3)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 3, 1)
    assert s["precision"] == pytest.approx(2 / 5)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 2 / (5 + 3))
    assert s["fn_rate"] == pytest.approx(1 / 3) and s["fp_rate"] == pytest.approx(3 / 5)
    s0 = metrics.marker_scores([[28, 2]], nuc, tolerance=0)
    assert s0["tp"] == 0


def test_mask_iou():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    a[:5] = True
    b[:, :5] = True
    assert metrics.mask_iou(a, b) == pytest.approx(25 / 75)
    assert metrics.mask_iou(a, a) == 1.0
    with pytest.raises(InputError, match="shapes differ"):
        metrics.mask_iou(a, b[:5])
