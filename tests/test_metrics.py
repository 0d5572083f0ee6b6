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


def test_corrected_markers_makes_each_fix_a_user_would_and_counts_the_clicks():
    cells = np.zeros((40, 40), int)
    cells[2:11, 2:11] = 1          # one marker: kept
    cells[2:13, 20:31] = 2         # two markers: the one nearer its deepest point stays
    cells[25:34, 25:34] = 3        # touches nothing, holds no marker: clicked at its centre
    cells[25:34, 2:11] = 4
    cells[25:34, 11:20] = 5        # touches cell 4; holds no marker either
    m = np.array([[6, 6], [3, 21], [7, 26], [38, 38], [29, 6]], float)
    fixed, n = metrics.corrected_markers(m, cells, tolerance=3)
    assert n == {"background": 1, "extra": 1, "missing": 2, "clicks": 4}
    s = metrics.marker_scores(fixed, cells, tolerance=0)
    assert s["precision"] == 1.0 and s["recall"] == 1.0
    np.testing.assert_array_equal(fixed[:3], [[6, 6], [7, 26], [29, 6]])   # order kept
    # the added markers sit at each cell's deepest pixel, inside it even where cells touch
    np.testing.assert_array_equal(fixed[3:], [[29, 29], [29, 15]])
    only, n1 = metrics.corrected_markers(m, cells, fix=["missing"])
    assert n1 == {"background": 0, "extra": 0, "missing": 2, "clicks": 2}
    assert len(only) == len(m) + 2
    with pytest.raises(InputError, match="unknown fix"):
        metrics.corrected_markers(m, cells, fix=["debris"])


def test_offset_markers_moves_each_click_the_distance_inside_its_own_cell():
    cells = np.zeros((40, 40), int)
    cells[2:20, 2:20] = 1          # wide: any direction fits
    cells[2:20, 24:27] = 2         # 3 px wide: only along its length
    cells[30:32, 30:32] = 3        # too small for a 5-px move: stays
    m = np.array([[10, 10], [10, 25], [30.5, 30.5], [36, 5]], float)   # last: background
    moved, n = metrics.offset_markers(m, cells, 5, seed=0)
    assert n == 2
    np.testing.assert_allclose(np.hypot(*(moved[:2] - m[:2]).T), 5)
    rc = np.round(moved).astype(int)
    np.testing.assert_array_equal(cells[rc[:, 0], rc[:, 1]], [1, 2, 3, 0])
    np.testing.assert_array_equal(moved[2:], m[2:])
    again, _ = metrics.offset_markers(m, cells, 5, seed=0)
    np.testing.assert_array_equal(again, moved)                  # seeded
    other = np.array([metrics.offset_markers(m, cells, 5, seed=k)[0][0] for k in range(1, 6)])
    assert len({tuple(p) for p in np.round(other, 6)}) > 1       # the direction is drawn
    np.testing.assert_array_equal(metrics.offset_markers(m, cells, 0)[0], m)
    with pytest.raises(InputError, match="distance"):
        metrics.offset_markers(m, cells, -1)


def test_mask_iou():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    a[:5] = True
    b[:, :5] = True
    assert metrics.mask_iou(a, b) == pytest.approx(25 / 75)
    assert metrics.mask_iou(a, a) == 1.0
    with pytest.raises(InputError, match="shapes differ"):
        metrics.mask_iou(a, b[:5])


def _two_cells():
    t = np.zeros((20, 20), int)
    t[0:10, 0:10] = 1     # 100 px
    t[10:20, 10:20] = 2   # 100 px
    return t


def test_iou_matrix_and_matched_iou_known_answer():
    t = _two_cells()
    p = np.zeros_like(t)
    p[0:10, 0:5] = 7      # half of cell 1: IoU 0.5
    p[10:20, 10:20] = 3   # exactly cell 2
    p[0:3, 15:20] = 9     # a false positive
    iou, tid, pid = metrics.iou_matrix(t, p)
    assert list(tid) == [1, 2] and list(pid) == [3, 7, 9]
    np.testing.assert_allclose(iou, [[0, 0.5, 0], [1, 0, 0]])
    m = metrics.matched_iou(t, p)
    assert m["mean"] == pytest.approx(0.75) and m["std"] == pytest.approx(0.25)
    assert m["missed"] == 0 and m["n_truth"] == 2
    empty = metrics.matched_iou(t, np.zeros_like(t))
    assert empty["mean"] == 0 and empty["missed"] == 2


def test_match_thresholds_and_ap():
    t = _two_cells()
    p = np.zeros_like(t)
    p[0:10, 0:6] = 1      # IoU 0.6 with cell 1
    p[10:20, 10:20] = 2   # IoU 1.0
    p[0:3, 15:20] = 3     # FP
    rows = {r["thresh"]: r for r in metrics.match(t, p, [0.5, 0.7])}
    assert (rows[0.5]["tp"], rows[0.5]["fp"], rows[0.5]["fn"]) == (2, 1, 0)
    assert (rows[0.7]["tp"], rows[0.7]["fp"], rows[0.7]["fn"]) == (1, 2, 1)
    assert rows[0.5]["ap"] == pytest.approx(2 / 3) and rows[0.7]["ap"] == pytest.approx(1 / 4)
    assert rows[0.5]["f1"] == pytest.approx(2 * 2 / 5)
    assert metrics.average_precision(t, p, [0.5, 0.7]) == pytest.approx((2 / 3 + 1 / 4) / 2)
    with pytest.raises(InputError, match="thresholds"):
        metrics.match(t, p, [0.3])


def test_one_to_one_matching():
    """A merged prediction matches only one of two true cells."""
    t = np.zeros((10, 20), int)
    t[:, :10], t[:, 10:] = 1, 2
    p = np.ones_like(t)          # one big cell: IoU 0.5 with each
    r = metrics.match(t, p, [0.5])[0]
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)


def test_agreement_is_symmetric():
    t = _two_cells()
    p = np.zeros_like(t)
    p[0:10, 0:10] = 1
    a, b = metrics.agreement(t, p), metrics.agreement(p, t)
    assert a["mean"] == pytest.approx(b["mean"])
    assert a["a_to_b"] == pytest.approx(0.5) and a["b_to_a"] == pytest.approx(1.0)


def test_label_shape_mismatch():
    with pytest.raises(InputError, match="does not match"):
        metrics.matched_iou(np.ones((5, 5), int), np.ones((6, 5), int))


def test_touching_ap_scores_the_crowded_cells_only():
    truth = np.zeros((30, 40), int)
    truth[2:12, 2:12] = 1
    truth[2:12, 12:25] = 2          # touches 1, larger
    truth[20:28, 30:38] = 3         # isolated
    assert list(metrics.touching_ids(truth)) == [1, 2]
    merged = np.where(truth > 0, 1, 0)
    merged[truth == 3] = 3          # 1 and 2 under one label, 3 right
    r = metrics.touching_ap(truth, merged)
    # the merge matches the larger cell (IoU 130/230), the smaller is missed; 3 is not counted
    assert r["n"] == 2 and r["tp"] == 1 and r["fn"] == 1 and r["fp"] == 0 and r["ap"] == 0.5
    r = metrics.touching_ap(truth, truth)
    assert r["ap"] == 1.0 and r["tp"] == 2
    half = truth.copy()
    half[20:28, 30:38] = 0          # the isolated cell missed: no effect on the touching AP
    half[25:29, 0:4] = 9            # a false cell on background: not counted either
    assert metrics.touching_ap(truth, half)["ap"] == 1.0
    assert np.isnan(metrics.touching_ap(truth * (truth == 3), truth)["ap"])


def test_error_kinds_names_why_each_prediction_fails():
    truth = np.zeros((80, 60), int)
    truth[0:10, 0:10] = 1           # A: found exactly
    truth[0:10, 20:42] = 2          # B: cut in two, the larger piece still matches
    truth[20:30, 0:10] = 3          # C and D: one object over both
    truth[20:30, 10:20] = 4
    truth[40:60, 0:20] = 5          # E: a quarter of it found
    truth[40:50, 30:40] = 6         # F: nothing on it
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 1
    pred[0:10, 20:32] = 2           # IoU 120/220
    pred[0:10, 32:42] = 3           # the other piece, 10/22 of B
    pred[20:32, 0:20] = 4           # C + D + a background strip: IoU 100/240 with each
    pred[40:50, 0:10] = 5           # IoU 0.25, all inside E
    pred[70:76, 40:50] = 6          # on background
    r = metrics.error_kinds(truth, pred)
    assert r["kinds"].tolist() == ["matched", "matched", "split", "merged", "outline",
                                   "background"]
    assert list(r["pred_ids"]) == [1, 2, 3, 4, 5, 6]
    assert {k: r[k] for k in metrics.ERROR_KINDS} == dict(matched=2, background=1, split=1,
                                                          merged=1, outline=1)
    assert r["uncovered"] == 1      # F
    # the matched count is match()'s true positives at the same threshold
    assert r["matched"] == metrics.match(truth, pred, [0.5])[0]["tp"]
    # a stricter threshold turns the 0.55 match into a failure of its own kind
    assert metrics.error_kinds(truth, pred, threshold=0.6)["kinds"][1] == "split"
    empty = metrics.error_kinds(truth, np.zeros_like(truth))
    assert empty["matched"] == 0 and empty["uncovered"] == 6 and empty["kinds"].size == 0
    for bad in (dict(threshold=0.3), dict(share=0.0), dict(share=1.5)):
        with pytest.raises(InputError, match="error_kinds"):
            metrics.error_kinds(truth, pred, **bad)
    with pytest.raises(InputError, match="shape"):
        metrics.error_kinds(truth, pred[:-1])


def test_evaluate_prints_the_failures_by_kind(tmp_path, capsys):
    import json

    import tifffile

    from cellnb.__main__ import main
    truth = np.zeros((40, 40), np.uint16)
    truth[0:10, 0:10], truth[0:10, 20:30], truth[20:30, 0:10] = 1, 2, 3
    pred = truth.copy()
    pred[0:10, 23:27], pred[0:10, 27:30] = 4, 6   # cell 2 cut in three: no piece matches
    pred[20:30, 0:10] = 0           # cell 3 missed
    pred[32:36, 32:36] = 5          # an object on background
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    argv = ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif")]
    assert main(argv) == 0
    assert ("1 on background, 3 pieces of a split cell, 0 over two cells, 0 with the outline off; "
            "1 true cells uncovered") in capsys.readouterr().out
    assert main(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failures"] == dict(
        background=1, split=3, merged=0, outline=0, uncovered=1)


def test_same_id_iou_compares_cells_by_their_id():
    a = np.zeros((10, 10), np.int32)
    a[0:4, 0:4], a[6:10, 6:10] = 1, 2
    assert metrics.same_id_iou(a, a) == 1.0
    b = a.copy()
    b[0:4, 0:2] = 0                      # cell 1 halved
    assert metrics.same_id_iou(a, b) == pytest.approx((0.5 + 1.0) / 2)
    c = np.where(a == 2, 3, a)           # cell 2 renumbered: it vanished and a new one came
    assert metrics.same_id_iou(a, c) == pytest.approx(1 / 3)
    assert metrics.same_id_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    with pytest.raises(InputError, match="shape"):
        metrics.same_id_iou(a, a[:5])
