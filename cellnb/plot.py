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

__all__ = ["show_channels", "show_markers", "savefig"]


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


def show_markers(image, markers, truth=None, crop=None, ax=None, title: str = ""):
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
    ax.plot(m[inside, 1], m[inside, 0], "r+", ms=6, mew=1.2)
    ax.set_title(title)
    ax.axis("off")
    return fig
