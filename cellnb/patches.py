"""Step 4a: one patch per marker, grouped by area, with invertible augmentation.

Every marker becomes one square patch (64x64 by default, as in the paper)
centred on it. Its channels are the chosen image channels plus a Gaussian
disk (sigma 15) at the marker, which tells the network *which* cell of the
patch to segment. Patches of markers near the border are zero-padded, so no
cell is dropped. A training batch is the patches of one area of the image
(640x640 in the paper): their outputs overlap on a common canvas, which is
what the loss needs.

Arrays here are NumPy; the random flips/transposes used during training
are also provided in TensorFlow (:func:`augment_tf`, :func:`invert_tf`) so
the inverse can be applied to the network output inside the compiled step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import InputError, check_image, check_markers

__all__ = ["default_patch_size", "gaussian_disk", "PatchSet", "extract_patches",
           "concat", "area_batches", "augment_np", "invert_np", "augment_tf", "invert_tf"]


def default_patch_size(markers, base: int = 64, step: int = 16) -> int:
    """Patch size that holds a typical cell with margin.

    The paper chose 64 px, larger than its cells (~40-50 px across). Here
    the typical cell diameter is taken as the median nearest-neighbour marker
    spacing d (touching cells: centre distance ~ diameter). A cell reaches
    up to about 0.8 d from an off-centre nucleus, so the patch must be at
    least ``1.6 * d``: the size is ``base`` unless that exceeds it, then it
    grows in steps of `step`.

    Parameters
    ----------
    markers : array_like, shape (N, 2)
    base, step : int

    Returns
    -------
    int
        A multiple of `step`, at least `base`.
    """
    from .mask import marker_spacing
    m = check_markers(markers)
    if len(m) < 2:
        return base
    need = 1.6 * marker_spacing(m)
    return int(max(base, step * int(np.ceil(need / step))))


def gaussian_disk(size: int, sigma: float = 15.0) -> np.ndarray:
    """``exp(-r^2 / (2 sigma^2))`` centred at (size // 2, size // 2); float32 (size, size)."""
    if sigma <= 0:
        raise InputError(f"gaussian_disk: sigma must be > 0, got {sigma}.")
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2.0 * sigma ** 2)).astype(np.float32)


@dataclass
class PatchSet:
    """Patches of one field.

    Attributes
    ----------
    x : ndarray of float32, shape (N, k, k, C + 1)
        Image channels then the Gaussian-disk channel.
    outside : ndarray of float32, shape (N, k, k)
        ``1 - M`` under each patch (1 where a pixel is outside the mask or
        outside the image), for the loss's mask term.
    corners : ndarray of int64, shape (N, 2)
        Top-left corner of each patch in *padded* image coordinates; the
        padded image is the original shifted by ``pad`` in both axes.
    centres : ndarray of int64, shape (N, 2)
        Marker pixel (row, col) in original image coordinates.
    size : int
        Patch side k.
    pad : int
        Padding added on every side (``k // 2``).
    shape : (int, int)
        Original image (H, W).
    """

    x: np.ndarray
    outside: np.ndarray
    corners: np.ndarray
    centres: np.ndarray
    size: int
    pad: int
    shape: tuple

    def __len__(self) -> int:
        return len(self.x)


def extract_patches(image, markers, mask=None, size: int = 64, sigma: float = 15.0) -> PatchSet:
    """Cut one patch per marker, with a Gaussian disk channel.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C), float
        Normalised image channels (e.g. :meth:`Field.stack`).
    markers : array_like, shape (N, 2)
        (row, col) positions; rounded to the nearest pixel.
    mask : array_like of bool, shape (H, W), optional
        Foreground mask M; without it everything inside the image counts as
        foreground (only the padding is "outside").
    size : int
        Patch side, even, at least 16.
    sigma : float
        Gaussian disk sigma, px (paper: 15).

    Returns
    -------
    PatchSet
    """
    img = check_image(image, name="image").astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    m = check_markers(markers, (h, w))
    if size < 16 or size % 2:
        raise InputError(f"patch size must be even and >= 16, got {size}.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise InputError(f"mask shape {mask.shape} does not match the image ({h}, {w}).")
    pad = size // 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    fg = np.ones((h, w), bool) if mask is None else mask.astype(bool)
    outside_pad = np.pad(~fg, pad, constant_values=True).astype(np.float32)
    centres = np.round(m).astype(np.int64)
    corners = centres  # centre + pad - pad: top-left in padded coordinates
    n, c = len(m), img.shape[-1]
    x = np.empty((n, size, size, c + 1), np.float32)
    out = np.empty((n, size, size), np.float32)
    disk = gaussian_disk(size, sigma)
    for i, (r0, c0) in enumerate(corners):
        x[i, ..., :c] = padded[r0:r0 + size, c0:c0 + size]
        out[i] = outside_pad[r0:r0 + size, c0:c0 + size]
    x[..., c] = disk
    return PatchSet(x=x, outside=out, corners=corners, centres=centres, size=size, pad=pad,
                    shape=(h, w))


def concat(sets) -> PatchSet:
    """Patches of several fields as one set, the fields laid side by side.

    Used to train one model on several fields (``cellnb batch --train-on``).
    Each field is shifted right past the previous one plus a gap of one
    patch, so patches of different fields never overlap in the loss and an
    area batch (:func:`area_batches`) never mixes cells of two fields that
    could touch.

    Parameters
    ----------
    sets : sequence of PatchSet
        Same patch size and channels.

    Returns
    -------
    PatchSet
        ``shape`` is (max height, total width incl. gaps); ``centres`` and
        ``corners`` are in that combined frame.
    """
    sets = list(sets)
    if not sets:
        raise InputError("concat: no patch sets.")
    size, ch = sets[0].size, sets[0].x.shape[-1]
    for s in sets:
        if s.size != size or s.x.shape[-1] != ch:
            raise InputError("concat: patch sets differ in patch size or channels "
                             f"({s.size}/{s.x.shape[-1]} vs {size}/{ch}).")
    shifts = np.cumsum([0] + [s.shape[1] + size for s in sets[:-1]])
    off = [np.array([0, d], np.int64) for d in shifts]
    return PatchSet(x=np.concatenate([s.x for s in sets]),
                    outside=np.concatenate([s.outside for s in sets]),
                    corners=np.concatenate([s.corners + o for s, o in zip(sets, off)]),
                    centres=np.concatenate([s.centres + o for s, o in zip(sets, off)]),
                    size=size, pad=sets[0].pad,
                    shape=(max(s.shape[0] for s in sets), int(shifts[-1] + sets[-1].shape[1])))


def area_batches(ps: PatchSet, area: int = 640, rng: np.random.Generator | None = None,
                 min_patches: int = 1) -> list[np.ndarray]:
    """Group patch indices by square areas of the image (one batch per area).

    The image is tiled by `area` x `area` squares; with `rng`, the grid is
    shifted by a random offset, so tile borders move between epochs and
    every pair of neighbouring cells is eventually in one batch. A patch
    belongs to the tile holding its marker.

    Parameters
    ----------
    ps : PatchSet
    area : int
        Tile side in px (paper: 640). Images smaller than this are one batch.
    rng : numpy Generator, optional
        Random grid offset and batch order; None gives a fixed grid.
    min_patches : int
        Tiles with fewer patches are merged into their neighbour batch
        rather than dropped.

    Returns
    -------
    list of ndarray of int
        Patch indices of each batch; together they cover every patch once.
    """
    if area < ps.size:
        raise InputError(f"area ({area}) must be at least the patch size ({ps.size}).")
    off = rng.integers(0, area, 2) if rng is not None else np.zeros(2, int)
    tile = (ps.centres + off) // area
    keys = tile[:, 0] * 100_000 + tile[:, 1]
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    groups = np.split(order, starts[1:])
    batches: list[np.ndarray] = []
    for g in groups:
        if batches and len(g) < min_patches:
            batches[-1] = np.concatenate([batches[-1], g])
        else:
            batches.append(g)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# --------------------------------------------------------------------------
# dihedral augmentation: code t in 0..7, bits = (transpose, flip rows, flip cols).
# Each step is its own inverse, so the inverse applies the same steps in reverse.
# --------------------------------------------------------------------------
_STEPS = (1, 2, 4)


def _step_np(p: np.ndarray, bit: int) -> np.ndarray:
    return np.swapaxes(p, 0, 1) if bit == 1 else p[::-1] if bit == 2 else p[:, ::-1]


def _dihedral_np(x: np.ndarray, codes, order) -> np.ndarray:
    out = np.array(x, copy=True)
    for i, t in enumerate(codes):
        p = out[i]
        for bit in order:
            if t & bit:
                p = _step_np(p, bit)
        out[i] = p
    return out


def augment_np(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Apply per-patch dihedral transforms. x: (N, k, k, ...); codes: (N,) ints 0..7."""
    return _dihedral_np(x, codes, _STEPS)


def invert_np(y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`augment_np`."""
    return _dihedral_np(y, codes, _STEPS[::-1])


def _dihedral_tf(x, codes, order):
    import tensorflow as tf
    rank = len(x.shape)
    for bit in order:
        flag = tf.bitwise.bitwise_and(codes, bit) > 0
        flag = tf.reshape(flag, tf.concat([tf.shape(flag), tf.ones(rank - 1, tf.int32)], 0))
        moved = tf.transpose(x, [0, 2, 1] + list(range(3, rank))) if bit == 1 else \
            tf.reverse(x, [1 if bit == 2 else 2])
        x = tf.where(flag, moved, x)
    return x


def augment_tf(x, codes):
    """TensorFlow :func:`augment_np` for a batch x (N, k, k, ...) and codes (N,) int32."""
    return _dihedral_tf(x, codes, _STEPS)


def invert_tf(y, codes):
    """TensorFlow :func:`invert_np`."""
    return _dihedral_tf(y, codes, _STEPS[::-1])
