"""Accuracy against ground truth: markers, masks and instance labels.

All functions take plain NumPy label images (0 = background) so they work
on any segmentation, not just cellnb's.
"""
from __future__ import annotations

import numpy as np

from .io import InputError, check_labels, check_markers

__all__ = ["marker_scores", "mask_iou"]


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
