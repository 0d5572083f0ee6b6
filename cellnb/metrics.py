"""Accuracy against ground truth: markers, masks and instance labels.

All functions take plain NumPy label images (0 = background) so they work
on any segmentation, not just cellnb's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .io import InputError, check_labels, check_markers

__all__ = ["marker_scores", "corrected_markers", "CORRECTIONS", "offset_markers", "mask_iou",
           "iou_matrix", "matched_iou", "match", "touching_ids", "touching_ap", "summarize",
           "average_precision", "agreement", "same_id_iou", "error_kinds", "ERROR_KINDS",
           "THRESHOLDS"]

#: IoU thresholds for instance matching (Cellpose / StarDist convention)
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def _marker_hits(markers, lab: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 2) markers and the object each one matches (0: none), as `marker_scores` rules."""
    m = np.asarray(markers, float).reshape(-1, 2)
    if len(m):
        m = check_markers(m, shape=lab.shape)
    hit = np.zeros(len(m), dtype=np.int64)
    h, w = lab.shape
    t = int(np.ceil(tolerance))
    for k, (r, c) in enumerate(m):
        ri, ci = int(round(r)), int(round(c))
        if lab[ri, ci] > 0:
            hit[k] = lab[ri, ci]
            continue
        if t <= 0:
            continue
        r0, r1, c0, c1 = max(0, ri - t), min(h, ri + t + 1), max(0, ci - t), min(w, ci + t + 1)
        win = lab[r0:r1, c0:c1]
        yy, xx = np.nonzero(win)
        if yy.size:
            d = np.hypot(yy + r0 - r, xx + c0 - c)
            j = int(np.argmin(d))
            if d[j] <= tolerance:
                hit[k] = win[yy[j], xx[j]]
    return m, hit


def marker_scores(markers, nuclei, tolerance: float = 3.0) -> dict:
    """Match markers to ground-truth nuclei; precision, recall, F1.

    A marker matches the nucleus it lies in, or, if it lies in background,
    the nearest nucleus pixel within `tolerance` px. Each nucleus counts once:
    a second marker in the same nucleus (an over-split) is a false positive;
    a nucleus without a marker is a false negative (a missed cell).

    Parameters
    ----------
    markers : array_like, shape (N, 2)
        (row, col) positions.
    nuclei : ndarray of int, shape (H, W)
        Ground-truth nucleus labels.
    tolerance : float
        Search radius (px) for markers that fall just outside a nucleus.

    Returns
    -------
    dict
        ``n_markers, n_nuclei, tp, fp, fn, precision, recall, f1,
        fn_rate, fp_rate`` (rates as fractions: ``fn / n_nuclei``,
        ``fp / n_markers``, as in the paper's synthetic-marker figures).
    """
    lab = check_labels(nuclei, name="ground-truth nuclei")
    n_true = int(len(np.unique(lab[lab > 0])))
    m, hit = _marker_hits(markers, lab, tolerance)
    # each nucleus counts once; further markers in it are over-splits (FP)
    tp = int(np.unique(hit[hit > 0]).size)
    fp = len(m) - tp
    fn = n_true - tp
    precision = tp / len(m) if len(m) else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (len(m) + n_true) if (len(m) + n_true) else 0.0
    return dict(n_markers=int(len(m)), n_nuclei=n_true, tp=int(tp), fp=int(fp), fn=int(fn),
                precision=precision, recall=recall, f1=f1,
                fn_rate=fn / n_true if n_true else 0.0,
                fp_rate=fp / len(m) if len(m) else 0.0)


#: what :func:`corrected_markers` fixes, in the order a user would work through a field
CORRECTIONS = ("background", "extra", "missing")


def corrected_markers(markers, cells, tolerance: float = 3.0,
                      fix: Sequence[str] = CORRECTIONS) -> tuple[np.ndarray, dict]:
    """The markers after a user has corrected them against the annotated cells.

    Simulates the check a user makes on detected markers before segmenting:
    delete each marker that lies on no annotated cell (``"background"``),
    delete all but one marker of a cell that holds several (``"extra"``: the
    one nearest the cell's deepest point stays), and click the deepest point
    of each cell that holds none (``"missing"``). A marker's cell is the one
    :func:`marker_scores` matches it to, so the result scores precision and
    recall 1 with all three fixes. The counts say how many clicks it took,
    to set against one click per cell.

    Parameters
    ----------
    markers : array_like, shape (N, 2)
        (row, col) positions, e.g. found in the image.
    cells : ndarray of int, shape (H, W)
        Annotated cell labels (0 = background).
    tolerance : float
        As in :func:`marker_scores`.
    fix : sequence of str
        Which of :data:`CORRECTIONS` to make.

    Returns
    -------
    markers : ndarray of float64, shape (M, 2)
        The kept markers in their order, then the added ones in label order.
    counts : dict
        ``background, extra, missing`` (markers deleted or added by each
        fix; 0 for a fix not made) and ``clicks``, their sum.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from .markers import body_depth
    unknown = set(fix) - set(CORRECTIONS)
    if unknown:
        raise InputError(f"corrected_markers: unknown fix {sorted(unknown)}; choose from "
                         f"{list(CORRECTIONS)}.")
    lab = check_labels(cells, name="annotated cells")
    m, hit = _marker_hits(markers, lab, tolerance)
    ids = np.unique(lab[lab > 0])
    # each cell's deepest pixel, touching cells kept apart by their shared border
    depth = body_depth((lab > 0) & ~find_boundaries(lab, mode="inner"))
    deepest = np.array(ndi.maximum_position(depth, lab, ids), float).reshape(-1, 2)
    centre = dict(zip(ids.tolist(), deepest))
    keep = np.ones(len(m), bool)
    counts = dict.fromkeys(CORRECTIONS, 0)
    if "background" in fix:
        keep &= hit > 0
        counts["background"] = int(np.sum(hit == 0))
    if "extra" in fix:
        for k in np.unique(hit[hit > 0]):
            idx = np.flatnonzero(hit == k)
            if len(idx) > 1:
                near = idx[np.argmin(np.hypot(*(m[idx] - centre[int(k)]).T))]
                keep[idx[idx != near]] = False
                counts["extra"] += len(idx) - 1
    added = np.empty((0, 2))
    if "missing" in fix:
        missed = sorted(set(ids.tolist()) - set(hit[hit > 0].tolist()))
        added = np.array([centre[k] for k in missed], float).reshape(-1, 2)
        counts["missing"] = len(missed)
    counts["clicks"] = sum(counts[k] for k in CORRECTIONS)
    return np.concatenate([m[keep], added]), counts


def offset_markers(markers, cells, distance: float, seed: int = 0) -> tuple[np.ndarray, int]:
    """The markers moved `distance` px off, each inside the annotated cell it lies in.

    Simulates where a user's click lands rather than a cell's ideal middle:
    each marker moves `distance` px in a random direction (of 16, tried in a
    random order) to a pixel of the same annotated cell. A marker on no
    annotated cell, or in a cell too narrow for any direction, stays put.
    With the shared fields' clicks (each on its cell's deepest pixel) it
    measures how much the method depends on where a cell is clicked
    (``bench/real_data.py --offset``).

    Parameters
    ----------
    markers : array_like, shape (N, 2)
        (row, col) positions.
    cells : ndarray of int, shape (H, W)
        Annotated cell labels (0 = background).
    distance : float
        How far each marker moves, px (>= 0).
    seed : int
        Seed of the directions: the same seed moves the same markers alike.

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
        In the input order.
    moved : int
        How many markers moved.
    """
    if not (np.isfinite(distance) and distance >= 0):
        raise InputError(f"offset_markers: distance must be a number of px >= 0, got "
                         f"{distance}.")
    lab = check_labels(cells, name="annotated cells")
    m = check_markers(markers, lab.shape).astype(np.float64)
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    h, w = lab.shape
    out, moved = m.copy(), 0
    if distance == 0:
        return out, moved
    for i, (r, c) in enumerate(m):
        own = lab[int(round(r)), int(round(c))]
        tries = rng.permutation(angles)   # drawn for every marker: none shifts the next draw
        if not own:
            continue
        for a in tries:
            rr, cc = r + distance * np.sin(a), c + distance * np.cos(a)
            ri, ci = int(round(rr)), int(round(cc))
            if 0 <= ri < h and 0 <= ci < w and lab[ri, ci] == own:
                out[i], moved = (rr, cc), moved + 1
                break
    return out, moved


def mask_iou(mask, truth) -> float:
    """Intersection over union of two binary masks (or label images > 0).

    Parameters
    ----------
    mask, truth : ndarray, shape (H, W)

    Returns
    -------
    float in [0, 1]; 1.0 when both are empty.
    """
    a, b = np.asarray(mask) > 0, np.asarray(truth) > 0
    if a.shape != b.shape:
        raise InputError(f"mask_iou: shapes differ, {a.shape} vs {b.shape}.")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _contingency(truth, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (true object, predicted object) pair; row and column 0 = background.

    Returns ``counts`` (int64, shape (n_truth + 1, n_pred + 1)) and the label
    ids of rows 1.. and columns 1.. (the images are checked here).
    """
    t = check_labels(truth, name="truth")
    p = check_labels(pred, name="prediction", shape=t.shape)
    t_ids = np.unique(t[t > 0])
    p_ids = np.unique(p[p > 0])
    t_idx = np.zeros(int(t.max()) + 1, np.int64)
    p_idx = np.zeros(int(p.max()) + 1, np.int64)
    t_idx[t_ids] = np.arange(1, len(t_ids) + 1)
    p_idx[p_ids] = np.arange(1, len(p_ids) + 1)
    nt, npr = len(t_ids) + 1, len(p_ids) + 1
    counts = np.bincount(t_idx[t.ravel()] * npr + p_idx[p.ravel()], minlength=nt * npr)
    return counts.reshape(nt, npr), t_ids, p_ids


def iou_matrix(truth, pred):
    """Pairwise IoU between the objects of two label images.

    Parameters
    ----------
    truth, pred : ndarray of int, shape (H, W)
        0 = background.

    Returns
    -------
    iou : ndarray of float64, shape (n_truth, n_pred)
    truth_ids, pred_ids : ndarray of int
        The label ids of the rows and columns.
    """
    counts, t_ids, p_ids = _contingency(truth, pred)
    return _iou(counts), t_ids, p_ids


def _iou(counts: np.ndarray) -> np.ndarray:
    """IoU of the objects of a :func:`_contingency` table (background row and column dropped)."""
    inter = counts.astype(float)
    union = inter.sum(1, keepdims=True) + inter.sum(0, keepdims=True) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou[1:, 1:]


def matched_iou(truth, pred) -> dict:
    """The paper's mIOU: each true cell's IoU with its best-matching predicted cell.

    Parameters
    ----------
    truth, pred : ndarray of int, shape (H, W)

    Returns
    -------
    dict
        ``mean``, ``std`` over true cells (a cell with no overlapping
        prediction counts 0), ``per_cell`` (ndarray, in truth-id order),
        ``truth_ids``, ``n_truth``, ``missed`` (true cells whose best IoU is
        below 0.5: no prediction stands for them).
    """
    iou, t_ids, _ = iou_matrix(truth, pred)
    best = iou.max(1) if iou.shape[1] else np.zeros(len(t_ids))
    if len(best) == 0:
        raise InputError("matched_iou: the ground truth holds no cell.")
    return dict(mean=float(best.mean()), std=float(best.std()), per_cell=best,
                truth_ids=t_ids, n_truth=int(len(best)), missed=int((best < 0.5).sum()))


def match(truth, pred, thresholds=THRESHOLDS) -> list[dict]:
    """One-to-one instance matching at several IoU thresholds.

    Pairs are assigned once by the Hungarian algorithm (maximum total IoU,
    scipy's ``linear_sum_assignment``) among pairs with IoU >= the lowest
    threshold; at threshold t, a matched pair with IoU >= t is a true
    positive. For t >= 0.5 a cell can overlap at most one other by more than
    half, so this equals matching separately at every threshold.

    Returns
    -------
    list of dict, one per threshold
        ``thresh, tp, fp, fn, precision, recall, f1, ap`` with
        ``ap = tp / (tp + fp + fn)`` (the "average precision" of the
        Cellpose and StarDist papers, and of the Data Science Bowl).
    """
    from scipy.optimize import linear_sum_assignment
    thresholds = [float(t) for t in np.atleast_1d(thresholds)]
    if min(thresholds) < 0.5 or max(thresholds) > 1:
        raise InputError("match: thresholds must lie in [0.5, 1].")
    iou, t_ids, p_ids = iou_matrix(truth, pred)
    nt, npd = iou.shape
    lo = min(thresholds)
    matched = np.zeros(0)
    if nt and npd:
        cand = np.where(iou >= lo, iou, 0.0)
        r, c = linear_sum_assignment(-cand)
        matched = iou[r, c][cand[r, c] > 0]
    rows = []
    for t in thresholds:
        tp = int((matched >= t).sum())
        fp, fn = npd - tp, nt - tp
        rows.append(dict(thresh=t, tp=tp, fp=fp, fn=fn,
                         precision=tp / npd if npd else 0.0,
                         recall=tp / nt if nt else 0.0,
                         f1=2 * tp / (nt + npd) if nt + npd else 0.0,
                         ap=tp / (tp + fp + fn) if tp + fp + fn else 0.0))
    return rows


def average_precision(truth, pred, thresholds=THRESHOLDS) -> float:
    """Mean over thresholds of ``tp / (tp + fp + fn)`` (mAP as in LIVECell/Cellpose)."""
    return float(np.mean([r["ap"] for r in match(truth, pred, thresholds)]))


def agreement(a, b) -> dict:
    """Agreement of two segmentations of the same field (the paper's cross-modality mIOU).

    The matched mIOU computed both ways (a as reference, then b) and averaged,
    so neither segmentation is privileged.

    Returns
    -------
    dict
        ``mean`` (symmetric), ``a_to_b``, ``b_to_a``.
    """
    ab = matched_iou(a, b)["mean"]
    ba = matched_iou(b, a)["mean"]
    return dict(mean=(ab + ba) / 2, a_to_b=ab, b_to_a=ba)


def same_id_iou(a, b) -> float:
    """Mean IoU of the objects that carry the same id in two label images.

    For two segmentations that number their objects alike (cellnb: label
    k + 1 = marker k), e.g. one field's labels at two moments of a training,
    no matching is needed: object k is compared with object k. Ids present
    in only one image count 0, so a cell that appears or vanishes lowers it.

    Parameters
    ----------
    a, b : ndarray of int, shape (H, W)

    Returns
    -------
    float
        In [0, 1]; 1.0 when both hold no object.
    """
    a, b = check_labels(a, name="first labels"), check_labels(b, name="second labels")
    if a.shape != b.shape:
        raise InputError(f"same_id_iou: label images differ in shape, {a.shape} vs {b.shape}.")
    n = int(max(a.max(), b.max())) + 1
    area_a = np.bincount(a.ravel(), minlength=n)[1:]
    area_b = np.bincount(b.ravel(), minlength=n)[1:]
    both = np.bincount(a[a == b].ravel(), minlength=n)[1:]
    union = area_a + area_b - both
    present = union > 0
    return float((both[present] / union[present]).mean()) if present.any() else 1.0


def touching_ids(labels) -> np.ndarray:
    """Ids of the objects that touch another object (4-connected neighbours).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    ndarray of int, sorted
    """
    lab = check_labels(labels, name="labels")
    ids = []
    for a, b in ((lab[1:, :], lab[:-1, :]), (lab[:, 1:], lab[:, :-1])):
        pair = (a > 0) & (b > 0) & (a != b)
        ids += [a[pair], b[pair]]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, int)


def touching_ap(truth, pred, threshold: float = 0.5) -> dict:
    """AP at `threshold` on the true cells that touch another true cell: the crowded case.

    The true cells kept are :func:`touching_ids`; the predictions kept are
    those whose largest overlap is with one of them (a prediction of an
    isolated cell or of background is left out, an over- or under-split
    of touching cells is not).

    Returns
    -------
    dict
        ``n`` (touching true cells) and the :func:`match` row at `threshold`
        (``tp, fp, fn, precision, recall, f1, ap``); ``ap`` is NaN when no
        cell touches another.
    """
    t = check_labels(truth, name="truth")
    p = check_labels(pred, name="prediction", shape=t.shape)
    keep_t = touching_ids(t)
    if len(keep_t) == 0:
        return dict(n=0, ap=float("nan"))
    counts, t_ids, p_ids = _contingency(t, p)
    # each prediction's main true cell, by overlapping pixels (background excluded; 0 = none)
    cells = counts[1:, 1:]
    owner = np.where(cells.max(0, initial=0) > 0, t_ids[cells.argmax(0)], 0)
    kept_p = p_ids[np.isin(owner, keep_t)]
    row = match(np.where(np.isin(t, keep_t), t, 0), np.where(np.isin(p, kept_p), p, 0),
                [threshold])[0]
    return dict(n=int(len(keep_t)), **{k: row[k] for k in ("tp", "fp", "fn", "precision",
                                                              "recall", "f1", "ap")})


#: :func:`error_kinds`' kinds of predicted object, in the order a prediction is tested for them
ERROR_KINDS = ("matched", "background", "split", "merged", "outline")


def error_kinds(truth, pred, threshold: float = 0.5, share: float = 0.2) -> dict:
    """Why each predicted object fails to match: what to fix, not only how much.

    Each predicted object gets the first kind that applies:

    * ``matched``: IoU >= `threshold` with a true cell (a true positive);
    * ``background``: more than half its area lies outside every true cell
      (a marker on debris or an unannotated object);
    * ``split``: the true cell holding most of its area also holds another
      predicted object covering at least `share` of that cell (a cell cut in
      two, e.g. by a second marker; the larger piece may still match);
    * ``merged``: at least `share` of its own area lies in a second true cell
      (two cells under one marker);
    * ``outline``: one cell, one object, the border off (mask extent, halo).

    Parameters
    ----------
    truth, pred : ndarray of int, shape (H, W)
        0 = background.
    threshold : float
        IoU of a match, in [0.5, 1] (then a match is one-to-one, as in :func:`match`).
    share : float
        In (0, 1): how much of a cell (``split``) or of the object
        (``merged``) counts.

    Returns
    -------
    dict
        A count for each of :data:`ERROR_KINDS`, ``uncovered`` (true cells
        no predicted object covers `share` of), ``pred_ids`` (ndarray of
        int) and ``kinds`` (ndarray of str, one per id).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((10, 20), int); truth[:, :10] = 1; truth[:, 10:] = 2
    >>> pred = np.zeros_like(truth); pred[:, :10] = 1; pred[:, 10:14] = 2; pred[:, 14:] = 3
    >>> r = error_kinds(truth, pred)
    >>> r["matched"], r["split"], r["kinds"].tolist()
    (2, 1, ['matched', 'split', 'matched'])
    """
    if not 0.5 <= threshold <= 1:
        raise InputError(f"error_kinds: threshold must lie in [0.5, 1], got {threshold}.")
    if not 0 < share < 1:
        raise InputError(f"error_kinds: share must lie in (0, 1), got {share}; 0.2 is the "
                         "default.")
    counts, _, p_ids = _contingency(truth, pred)
    area_t, area_p = counts.sum(1), counts.sum(0)
    iou = _iou(counts)

    def kind(j: int) -> str:
        """The kind of the object in column j (1-based) of the table."""
        cells = counts[1:, j]
        if iou.shape[0] and iou[:, j - 1].max() >= threshold:
            return "matched"
        if counts[0, j] * 2 > area_p[j]:
            return "background"
        g = int(np.argmax(cells)) + 1
        others = np.delete(counts[g, 1:], j - 1)
        if others.size and others.max() >= share * area_t[g]:
            return "split"
        if len(cells) > 1 and np.sort(cells)[-2] >= share * area_p[j]:
            return "merged"
        return "outline"

    kinds = np.array([kind(j) for j in range(1, len(p_ids) + 1)], dtype="<U10")
    covered = counts[1:, 1:].max(1, initial=0) >= share * area_t[1:]
    return {**{k: int((kinds == k).sum()) for k in ERROR_KINDS},
            "uncovered": int((~covered).sum()), "pred_ids": p_ids, "kinds": kinds}


def summarize(truth, pred) -> dict:
    """The headline figures of one segmentation against ground truth (one Table-I row).

    Parameters
    ----------
    truth, pred : ndarray of int, shape (H, W)

    Returns
    -------
    dict
        ``mIOU``, ``mIOU_sd``, ``missed`` (true cells with best IoU < 0.5),
        ``n_truth``, ``n_pred``, ``AP50``, ``F1@0.5`` and ``mAP`` (mean of
        ``tp / (tp + fp + fn)`` over IoU thresholds 0.5-0.9), plus
        ``by_threshold`` (the rows of :func:`match`).
    """
    m = matched_iou(truth, pred)
    rows = match(truth, pred)
    return {"mIOU": m["mean"], "mIOU_sd": m["std"], "missed": m["missed"],
            "n_truth": m["n_truth"], "n_pred": int(rows[0]["tp"] + rows[0]["fp"]),
            "AP50": rows[0]["ap"], "F1@0.5": rows[0]["f1"],
            "mAP": float(np.mean([r["ap"] for r in rows])), "by_threshold": rows}
