"""Step 5: from per-patch outputs to one label image of the whole field.

Each pixel goes to the patch with the highest probability there; pixels
where every patch is below 0.5 are background (paper, Methods). Ties go to
the patch listed first (the lower marker index). Labels follow marker
order: marker k (0-based) is label k + 1, so label ids match the marker CSV.

Light clean-up (on by default, documented and switchable): a cell keeps
only the connected piece that holds its marker (or its largest piece if
the marker pixel went to a neighbour); stray fragments become background;
background pin-holes fully enclosed by one cell are given to that cell.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .io import InputError, check_labels
from .patches import PatchSet

__all__ = ["predict_patches", "integrate", "keep_marker_component", "cell_table"]


def predict_patches(model, patches: PatchSet, batch_size: int = 128,
                    tta: bool = False) -> np.ndarray:
    """Cell probability for every patch.

    Parameters
    ----------
    model : keras.Model
        Trained UNet (logit output).
    patches : PatchSet
    batch_size : int
    tta : bool
        Average over the 8 flips/transposes (test-time augmentation, 8x slower).

    Returns
    -------
    ndarray of float32, shape (N, k, k), in [0, 1]
    """
    import tensorflow as tf
    from .patches import augment_tf, invert_tf
    if model.input_shape[-1] != patches.x.shape[-1]:
        raise InputError(f"the model takes {model.input_shape[-1]} input channels, the patches "
                         f"have {patches.x.shape[-1]}: use the channels it was trained on.")
    out = np.empty(patches.x.shape[:3], np.float32)
    codes_all = range(8) if tta else [0]
    for s in range(0, len(patches), batch_size):
        x = tf.constant(patches.x[s:s + batch_size])
        acc = 0.0
        for t in codes_all:
            codes = tf.fill([tf.shape(x)[0]], t)
            z = model(augment_tf(x, codes), training=False)[..., 0]
            acc += tf.sigmoid(invert_tf(z, codes))
        out[s:s + batch_size] = (acc / len(codes_all)).numpy()
    return out


def keep_marker_component(labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Keep, for each label, only the connected piece holding its marker, holes filled.

    Background holes entirely enclosed by one cell become part of it; pixels
    of other cells are never taken.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Label k belongs to ``centres[k - 1]``.
    centres : ndarray of int, shape (N, 2)

    Returns
    -------
    ndarray of int32
    """
    out = labels.astype(np.int32, copy=True)
    for k, sl in enumerate(ndi.find_objects(out), start=1):
        if sl is None:
            continue
        sub = out[sl] == k
        comp, n = ndi.label(sub)
        if n > 1:
            r, c = centres[k - 1] - [sl[0].start, sl[1].start]
            inside = 0 <= r < sub.shape[0] and 0 <= c < sub.shape[1]
            keep = comp[r, c] if inside and comp[r, c] else \
                1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
            out[sl][sub & (comp != keep)] = 0
            sub = comp == keep
        holes = ndi.binary_fill_holes(sub) & (out[sl] == 0)
        out[sl][holes] = k
    return out


def integrate(probs: np.ndarray, patches: PatchSet, threshold: float = 0.5,
              cleanup: bool = True) -> np.ndarray:
    """Whole-field label image from patch probabilities.

    Parameters
    ----------
    probs : ndarray, shape (N, k, k)
        :func:`predict_patches` output, same order as the patches/markers.
    patches : PatchSet
    threshold : float
        Below this everywhere = background (paper: 0.5).
    cleanup : bool
        :func:`keep_marker_component`.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 = background; label k + 1 = marker k.
    """
    probs = np.asarray(probs, np.float32)
    if probs.shape != patches.x.shape[:3]:
        raise InputError(f"integrate: probabilities of shape {probs.shape} do not match "
                         f"{len(patches)} patches of {patches.size}x{patches.size}.")
    if not (0 < threshold < 1):
        raise InputError(f"integrate: threshold must be in (0, 1), got {threshold}.")
    h, w = patches.shape
    k, pad = patches.size, patches.pad
    best = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    lab = np.zeros(best.shape, np.int32)
    for i, (r, c) in enumerate(patches.corners):
        sub_b = best[r:r + k, c:c + k]
        win = probs[i] > sub_b
        sub_b[win] = probs[i][win]
        lab[r:r + k, c:c + k][win] = i + 1
    best = best[pad:pad + h, pad:pad + w]
    lab = lab[pad:pad + h, pad:pad + w]
    lab[best < threshold] = 0
    return keep_marker_component(lab, patches.centres) if cleanup else lab


def cell_table(labels, markers, images: dict | None = None) -> list[dict]:
    """One row per marker: id, marker position, area, centroid, mean intensities.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Label k + 1 = marker k.
    markers : ndarray, shape (N, 2)
    images : dict of str -> ndarray (H, W), optional
        Channels to average over each cell (raw values).

    Returns
    -------
    list of dict
        Cells whose label vanished keep their row with area 0.
    """
    lab = check_labels(labels)
    m = np.asarray(markers, float).reshape(-1, 2)
    ids = np.arange(1, len(m) + 1)
    area = ndi.sum(np.ones_like(lab), lab, ids) if len(ids) else []
    with np.errstate(invalid="ignore", divide="ignore"):  # cells of area 0: no centroid/mean
        cents = ndi.center_of_mass(np.ones_like(lab), lab, ids) if len(ids) else []
        means = {name: ndi.mean(np.asarray(img, float), lab, ids)
                 for name, img in (images or {}).items()}
    rows = []
    for i, k in enumerate(ids):
        a = int(area[i])
        row = {"id": int(k), "marker_row": round(m[i, 0], 2), "marker_col": round(m[i, 1], 2),
               "area": a,
               "centroid_row": round(float(cents[i][0]), 2) if a else "",
               "centroid_col": round(float(cents[i][1]), 2) if a else ""}
        for name, v in means.items():
            row[f"mean_{name}"] = round(float(v[i]), 3) if a else ""
        rows.append(row)
    return rows
