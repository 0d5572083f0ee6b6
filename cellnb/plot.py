"""Figures for the notebooks: channels, markers, masks and label overlays.

Every function draws into Matplotlib axes and returns the figure, so the
notebooks show it and :func:`savefig` writes it (atomically) into the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

import numpy as np

from .io import atomic_path, normalize

__all__ = ["show_channels", "show_markers", "marker_raster", "show_mask", "loss_curve",
           "patch_outputs", "label_overlay", "iou_histogram", "worst_cells", "nucleus_composite",
           "savefig"]


def _gray(image) -> np.ndarray:
    return normalize(image, clip=True)


def savefig(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)


def show_channels(field, channels: Sequence[str] | None = None, crop=None):
    """One panel per channel of a :class:`~cellnb.datasets.Field` (optionally cropped).

    Parameters
    ----------
    field : Field
    channels : sequence of str, optional
        Default: all channels.
    crop : tuple of slice, optional
        E.g. ``np.s_[0:256, 0:256]``.
    """
    import matplotlib.pyplot as plt
    channels = list(channels or field.images)
    crop = crop or np.s_[:, :]
    fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels), 4), squeeze=False)
    for ax, ch in zip(axes[0], channels):
        ax.imshow(_gray(field.images[ch][crop]), cmap="gray")
        ax.set_title(ch)
        ax.axis("off")
    fig.suptitle(field.name)
    fig.tight_layout()
    return fig


def show_markers(image, markers, truth=None, crop=None, ax=None, title: str = "",
                 added: int | None = None):
    """Markers (red +) over an image, with ground-truth nucleus outlines (cyan).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    markers : ndarray, shape (N, 2)
        (row, col).
    truth : ndarray of int, shape (H, W), optional
        Ground-truth nucleus labels to outline.
    crop : tuple of slice, optional
        Show a zoomed region (markers are shifted accordingly).
    added : int, optional
        Markers from this index on are drawn as orange x (e.g. the ones
        :func:`cellnb.synthetic_nuclei.self_trained_markers` adds to the bodies').
    """
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 7))
    else:
        fig = ax.figure
    crop = crop or np.s_[:, :]
    img = _gray(image)[crop]
    ax.imshow(img, cmap="gray")
    r0 = crop[0].start or 0
    c0 = crop[1].start or 0
    m = np.asarray(markers).reshape(-1, 2) - [r0, c0]
    inside = (m[:, 0] >= 0) & (m[:, 0] < img.shape[0]) & (m[:, 1] >= 0) & (m[:, 1] < img.shape[1])
    if truth is not None:
        b = find_boundaries(np.asarray(truth)[crop], mode="inner")
        ax.imshow(np.ma.masked_where(~b, b), cmap=matplotlib.colors.ListedColormap(["cyan"]),
                  interpolation="nearest")
    first = np.arange(len(m)) < (len(m) if added is None else added)
    ax.plot(m[inside & first, 1], m[inside & first, 0], "r+", ms=6, mew=1.2)
    if added is not None:
        ax.plot(m[inside & ~first, 1], m[inside & ~first, 0], "x", color="orange", ms=6, mew=1.5)
    ax.set_title(title)
    ax.axis("off")
    return fig


def marker_raster(image, markers, truth=None, crop=None, added: int | None = None,
                  arm: int = 5) -> np.ndarray:
    """Markers drawn into the image's own pixels: one image pixel, one raster pixel.

    Unlike :func:`show_markers` (a Matplotlib figure with a title and margins),
    the raster's pixel (r, c) is the crop's pixel (r, c), so a click on it
    names an image position exactly (:class:`cellnb.widgets.MarkerEditor`).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    markers : ndarray, shape (N, 2)
        (row, col) in the whole image.
    truth : ndarray of int, shape (H, W), optional
        Annotated cells, outlined in cyan.
    crop : tuple of slice, optional
        The region drawn.
    added : int, optional
        Markers from this index on are drawn in green (e.g. added by hand),
        the others as red crosses.
    arm : int
        Half-length of a cross, px (its bars are 3 px wide, to show on a
        1000-px field scaled down to a notebook's width).

    Returns
    -------
    ndarray of uint8, shape (h, w, 3)
        RGB of the crop.
    """
    from skimage.segmentation import find_boundaries
    crop = crop or np.s_[:, :]
    g = (_gray(np.asarray(image, dtype=np.float32))[crop] * 255).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    h, w = g.shape
    if truth is not None:
        rgb[find_boundaries(np.asarray(truth)[crop], mode="inner")] = (0, 255, 255)
    r0, c0 = crop[0].start or 0, crop[1].start or 0
    m = np.rint(np.asarray(markers, dtype=float).reshape(-1, 2) - [r0, c0]).astype(int)
    n_first = len(m) if added is None else added
    for k, (r, c) in enumerate(m):
        if not (0 <= r < h and 0 <= c < w):
            continue
        color = (255, 40, 40) if k < n_first else (60, 255, 60)
        rgb[max(r - 1, 0):r + 2, max(c - arm, 0):c + arm + 1] = color
        rgb[max(r - arm, 0):r + arm + 1, max(c - 1, 0):c + 2] = color
    return rgb


def show_mask(image, mask, probability=None, truth=None, crop=None, title: str = ""):
    """Input, foreground probability (data term) and mask outline over the image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    mask : ndarray of bool, shape (H, W)
    probability : ndarray, shape (H, W), optional
    truth : ndarray, shape (H, W), optional
        Ground-truth labels; its foreground outline is drawn in cyan.
    crop : tuple of slice, optional
    """
    import matplotlib.pyplot as plt
    crop = crop or np.s_[:, :]
    n = 3 if probability is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 5))
    img = _gray(image)[crop]
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("input")
    if probability is not None:
        im = axes[1].imshow(np.asarray(probability)[crop], cmap="magma", vmin=0, vmax=1)
        axes[1].set_title("foreground probability")
        fig.colorbar(im, ax=axes[1], fraction=0.046)
    ax = axes[-1]
    ax.imshow(img, cmap="gray")
    ax.contour(np.asarray(mask)[crop], [0.5], colors="yellow", linewidths=0.8)
    if truth is not None:
        ax.contour(np.asarray(truth)[crop] > 0, [0.5], colors="cyan", linewidths=0.6)
    ax.set_title("mask (yellow)" + (" vs truth (cyan)" if truth is not None else ""))
    for a in axes:
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_curve(histories: dict, ax=None):
    """Loss per step (light) and its running mean (bold), one line per run.

    Parameters
    ----------
    histories : dict of str -> list of dict
        Run name -> training history rows (``step``, ``loss``).
    """
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for i, (name, hist) in enumerate(histories.items()):
        steps = np.array([h["step"] for h in hist])
        loss = np.array([h["loss"] for h in hist])
        col = f"C{i % 10}"
        ax.plot(steps, loss, color=col, alpha=0.25, lw=0.7)
        k = max(1, len(loss) // 30)
        sm = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], sm, color=col, lw=2, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (Eq. 1, per patch)")
    ax.legend(fontsize=8)
    ax.set_title("unsupervised training")
    return fig


def patch_outputs(patches, probs: dict, truth=None, n: int = 8, seed: int = 0):
    """Like the paper's Fig. 3: input patches (top), network outputs below.

    Parameters
    ----------
    patches : PatchSet
    probs : dict of str -> ndarray (N, k, k)
        Model name -> patch probabilities (one row each).
    truth : ndarray of int (H, W), optional
        Ground-truth cells at the original resolution; the true cell of each
        patch is outlined in yellow (brought to the patches' working scale).
    n : int
        Number of patches (random, seeded).
    """
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(patches), min(n, len(patches)), replace=False))
    rows = 1 + len(probs)
    fig, axes = plt.subplots(rows, len(idx), figsize=(1.6 * len(idx), 1.7 * rows), squeeze=False)
    k, pad = patches.size, patches.pad
    tpad = None
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != tuple(patches.shape):
            from skimage.transform import resize
            truth = resize(truth, patches.shape, order=0, preserve_range=True,
                           anti_aliasing=False).astype(truth.dtype)
        tpad = np.pad(truth, pad)
    for j, i in enumerate(idx):
        r, c = patches.corners[i]
        true_cell = None
        if tpad is not None:
            crop = tpad[r:r + k, c:c + k]
            lab = crop[pad, pad]
            true_cell = crop == lab if lab else None
        axes[0, j].imshow(patches.x[i, ..., 0], cmap="gray")
        for row, (name, pr) in enumerate(probs.items(), start=1):
            axes[row, j].imshow(pr[i], cmap="viridis", vmin=0, vmax=1)
            if true_cell is not None:
                axes[row, j].contour(true_cell, [0.5], colors="yellow", linewidths=0.8)
            if j == 0:
                axes[row, j].set_ylabel(name, fontsize=7)
        for row in range(rows):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=7)
    fig.tight_layout()
    return fig


def label_overlay(image, labels, truth=None, zoom=None, title: str = ""):
    """Like the paper's Fig. 2: colour label map, and outlines over the image (zoomed).

    Parameters
    ----------
    image : ndarray (H, W)
    labels : ndarray of int (H, W)
    truth : ndarray of int (H, W), optional
        Ground-truth outlines drawn in cyan in the zoom.
    zoom : tuple of slice, optional
        Region for the outline panel (default: the top-left quarter).
    """
    import matplotlib.pyplot as plt
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries
    lab = np.asarray(labels)
    h, w = lab.shape
    zoom = zoom or np.s_[0:h // 2, 0:w // 2]
    gray = _gray(image)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5))
    axes[0].imshow(gray, cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(label2rgb(lab, bg_label=0, bg_color=(0, 0, 0)))
    axes[1].set_title(f"{len(np.unique(lab[lab > 0]))} cells")
    r0, r1 = zoom[0].start or 0, zoom[0].stop or h
    c0, c1 = zoom[1].start or 0, zoom[1].stop or w
    for ax in axes[:2]:
        ax.add_patch(plt.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, ec="white", lw=1))
    axes[2].imshow(gray[zoom], cmap="gray")
    b = find_boundaries(lab[zoom], mode="inner")
    axes[2].imshow(np.ma.masked_where(~b, b), cmap=matplotlib.colors.ListedColormap(["yellow"]),
                   interpolation="nearest")
    if truth is not None:
        tb = find_boundaries(np.asarray(truth)[zoom], mode="inner")
        axes[2].imshow(np.ma.masked_where(~tb, tb), cmap=matplotlib.colors.ListedColormap(["cyan"]),
                       interpolation="nearest", alpha=0.6)
    axes[2].set_title("zoom: outlines (yellow)" + (", truth (cyan)" if truth is not None else ""))
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def iou_histogram(per_cell: dict, ax=None):
    """Histogram of per-cell IoU (each true cell vs its best prediction), one line per method.

    Parameters
    ----------
    per_cell : dict of str -> ndarray (n_truth,)
        Method name -> ``matched_iou(...)["per_cell"]``.
    """
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
    else:
        fig = ax.figure
    bins = np.linspace(0, 1, 26)
    for name, v in per_cell.items():
        v = np.asarray(v)
        ax.hist(v, bins=bins, histtype="step", lw=1.6,
                label=f"{name} (mean {v.mean():.2f})")
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("IoU of each true cell with its best-matching predicted cell")
    ax.set_ylabel("cells")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def worst_cells(image, truth, pred, per_cell, truth_ids, n: int = 6, margin: int = 12):
    """The `n` true cells with the lowest IoU: image crop, truth outline, prediction.

    Parameters
    ----------
    image : ndarray (H, W)
    truth, pred : ndarray of int (H, W)
    per_cell, truth_ids : ndarray
        From :func:`cellnb.metrics.matched_iou` (IoU per true cell, and ids).
    n : int
        How many cells to show.
    margin : int
        Pixels of context around each cell.
    """
    import matplotlib.pyplot as plt
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries
    truth, pred = np.asarray(truth), np.asarray(pred)
    order = np.argsort(per_cell)[:n]
    gray = _gray(image)
    fig, axes = plt.subplots(2, len(order), figsize=(2.2 * len(order), 4.6), squeeze=False)
    h, w = truth.shape
    for j, k in enumerate(order):
        rr, cc = np.nonzero(truth == truth_ids[k])
        sl = np.s_[max(rr.min() - margin, 0):min(rr.max() + margin + 1, h),
                   max(cc.min() - margin, 0):min(cc.max() + margin + 1, w)]
        cell = truth[sl] == truth_ids[k]
        axes[0, j].imshow(gray[sl], cmap="gray")
        axes[0, j].contour(cell, [0.5], colors="cyan", linewidths=1)
        axes[0, j].set_title(f"IoU {per_cell[k]:.2f}", fontsize=8)
        axes[1, j].imshow(label2rgb(pred[sl], bg_label=0, bg_color=(0, 0, 0)))
        b = find_boundaries(pred[sl], mode="inner")
        axes[1, j].imshow(np.ma.masked_where(~b, b),
                          cmap=matplotlib.colors.ListedColormap(["white"]), interpolation="nearest")
        axes[1, j].contour(cell, [0.5], colors="cyan", linewidths=1)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image + true cell", fontsize=8)
    axes[1, 0].set_ylabel("prediction", fontsize=8)
    fig.tight_layout()
    return fig


def nucleus_composite(real, synthetic, crop=None, markers=None, title: str = ""):
    """Real vs synthetic nucleus image as one colour composite (paper Fig. 4 d/i).

    Green = real nucleus image, magenta = synthetic (predicted) one: where
    they agree the composite is white/grey, a green-only blob is a nucleus
    the model missed, a magenta-only blob one it invented.

    Parameters
    ----------
    real : ndarray (H, W)
        Nucleus image (any range; percentile-normalised here).
    synthetic : ndarray of float (H, W)
        Predicted nucleus probability, [0, 1].
    crop : tuple of slice, optional
    markers : ndarray (N, 2), optional
        Markers found on the synthetic image, drawn as crosses.
    """
    import matplotlib.pyplot as plt
    crop = crop or np.s_[:, :]
    g = _gray(real)[crop]
    m = np.clip(np.asarray(synthetic, float), 0, 1)[crop]
    rgb = np.stack([m, g, m], -1)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(rgb)
    if markers is not None:
        r0, c0 = crop[0].start or 0, crop[1].start or 0
        mk = np.asarray(markers) - [r0, c0]
        hh, ww = g.shape
        keep = (mk[:, 0] >= 0) & (mk[:, 0] < hh) & (mk[:, 1] >= 0) & (mk[:, 1] < ww)
        ax.plot(mk[keep, 1], mk[keep, 0], "+", color="yellow", ms=6, mew=1.2)
    ax.set_title(title or "real nucleus (green) vs synthetic (magenta)")
    ax.axis("off")
    fig.tight_layout()
    return fig
