"""Step 4a: one patch per marker, grouped by area, with invertible augmentation.

Every marker becomes one square patch (64x64 by default, as in the paper)
centred on it. The patch must hold the whole cell: where cells are larger
than the paper's (real 10x phase-contrast fibroblasts reach 60-100 px from
their marker), :func:`patch_geometry` first grows the patch, then processes
the field at a reduced *working scale* so that the cells fit
(:attr:`PatchSet.scale`); integration maps the result back to full resolution. Its channels are the chosen image channels plus a Gaussian
disk (sigma 15) at the marker, which tells the network *which* cell of the
patch to segment. Patches of markers near the border are zero-padded, so no
cell is dropped. A training batch is the patches of one area of the image
(640x640 in the paper): their outputs overlap on a common canvas, which is
what the loss needs.

Arrays here are NumPy; the random flips/transposes used during training
are also provided in ``keras.ops`` (:func:`augment_ops`, :func:`invert_ops`,
any Keras backend) so the inverse can be applied to the network output
inside the compiled training step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import InputError, check_image, check_markers

__all__ = ["cell_reach", "patch_geometry", "mask_to_scale", "gaussian_disk", "PatchSet",
           "extract_patches", "concat", "area_batches", "dihedral_flags", "augment_np", "invert_np",
           "augment_ops", "invert_ops"]


def cell_reach(mask, markers) -> np.ndarray:
    """How far each marker's cell reaches, by the mask split between markers.

    The mask is divided by nearest marker (:func:`cellnb.baseline.nearest_marker`);
    each piece's reach is the largest Chebyshev distance (px) from its marker,
    i.e. the smallest patch half-side that holds it.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    markers : ndarray, shape (N, 2)

    Returns
    -------
    ndarray of float64, shape (M,)
        One value per marker whose piece is not empty (M <= N).
    """
    from scipy import ndimage as ndi
    from .baseline import nearest_marker
    m = check_markers(markers)
    lab = nearest_marker(mask, m)
    out = []
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        rr, cc = np.nonzero(lab[sl] == k)
        out.append(max(np.abs(rr + sl[0].start - m[k - 1, 0]).max(),
                       np.abs(cc + sl[1].start - m[k - 1, 1]).max()))
    return np.asarray(out, float)


def patch_geometry(markers, mask=None, size: int | None = None, base: int = 64,
                   largest: int = 96, step: int = 16, fit: float = 0.9, margin: float = 2.0,
                   min_scale: float = 0.25) -> tuple[int, float]:
    """Patch side and working scale that make the cells fit their patches.

    The patch must hold the cell it segments: a pixel outside it can never
    be given to the cell. The cells' reach is measured on cellnb's own mask
    (:func:`cell_reach`; no ground truth), and its `fit` quantile r sets
    what is needed: a side of ``2 * (r + margin)``.

    * Up to `largest` px, the patch grows to that side (in steps of `step`,
      at least `base`) at full resolution: the paper's 64 px unless cells
      are larger.
    * Beyond, the patch stays `base` px and the field is processed at the
      scale ``(base / 2 - margin) / r`` (at least `min_scale`), so that a
      training step costs the same per cell whatever the cell size. The
      foreground mask keeps its full resolution (integration uses it).

    Without a mask the marker spacing stands in for the cell size (touching
    cells: reach ~0.8 x spacing), for the paper's confluent fields.

    Bound: at most ``largest**2`` pixels per patch, i.e. 2.25x the work of a
    64 px patch, so a step costs at most that per cell whatever the cell
    size. On the 8 Usiigaci phase-contrast fields (10x, cells up to ~300 px
    long) this gives 64 px patches at scale 0.31-0.50, and 83-96 % of the
    annotated cells fit inside their patch (21-74 % would in 96 px patches at
    full resolution, 8-32 % in the paper's 64 px); on the synthetic demo
    fields it keeps the paper's 64 px at full resolution.

    Parameters
    ----------
    markers : array_like, shape (N, 2)
    mask : ndarray of bool, shape (H, W), optional
    size : int, optional
        A fixed patch side (e.g. the one a trained model takes); only the
        scale is chosen.
    base, largest, step : int
        Smallest, largest and increment of the automatic patch side.
    fit : float
        Fraction of cells that must fit, in (0, 1].
    margin : float
        Pixels kept free between the cell and the patch border.
    min_scale : float
        Lower bound on the working scale.

    Returns
    -------
    size : int
        Patch side, even.
    scale : float
        Working scale in (0, 1]; 1 = full resolution.
    """
    from .mask import marker_spacing
    m = check_markers(markers)
    if not 0 < fit <= 1:
        raise InputError(f"patch_geometry: fit must be in (0, 1], got {fit}.")
    if size is not None and (int(size) != size or size < 16 or size % 2):
        raise InputError(f"patch size must be an even integer >= 16, got {size}.")
    if mask is not None and np.asarray(mask).any():
        reach = cell_reach(mask, m)
        r = float(np.quantile(reach, fit)) if reach.size else 0.0
    elif len(m) >= 2:
        r = 0.8 * marker_spacing(m)
    else:
        r = 0.0
    need = 2 * (r + margin)
    if size is None:
        if need <= largest:
            return int(max(base, step * int(np.ceil(need / step)))), 1.0
        size = base
    if need <= size:
        return int(size), 1.0
    return int(size), float(max(min_scale, (size / 2 - margin) / max(r, 1e-6)))


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
        Image (H, W) at the working scale (the patches' pixel grid).
    scale : float
        Working scale: 1 = the original image; 0.5 = patches cut from the
        image downsampled by 2 (so cells fit; :func:`patch_geometry`).
    markers : ndarray of float64, shape (N, 2)
        The markers in original image coordinates.
    full_shape : (int, int)
        The original image (H, W).
    """

    x: np.ndarray
    outside: np.ndarray
    corners: np.ndarray
    centres: np.ndarray
    size: int
    pad: int
    shape: tuple
    scale: float = 1.0
    markers: np.ndarray | None = None
    full_shape: tuple | None = None

    def __len__(self) -> int:
        return len(self.x)


def mask_to_scale(mask, scale: float) -> np.ndarray:
    """A mask at a working scale: the pixels more than half covered (anti-aliased).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    scale : float in (0, 1]

    Returns
    -------
    ndarray of bool, shape (round(H * scale), round(W * scale))
    """
    if scale == 1.0:
        return np.asarray(mask, bool)
    from skimage.transform import rescale
    return rescale(np.asarray(mask, np.float32), scale, order=1, anti_aliasing=True) > 0.5


def to_scale(image, mask, markers, scale: float):
    """Image, mask and markers at a working scale (anti-aliased, pixel centres kept).

    Parameters
    ----------
    image : ndarray, shape (H, W, C), float
    mask : ndarray of bool, shape (H, W), or None
    markers : ndarray, shape (N, 2)
    scale : float in (0, 1]

    Returns
    -------
    image, mask, markers
        At the working scale; mask pixels are those more than half covered.
    """
    if scale == 1.0:
        return image, mask, markers
    from skimage.transform import rescale
    img = rescale(image, scale, order=1, anti_aliasing=True, channel_axis=-1,
                  preserve_range=True).astype(np.float32)
    h, w = img.shape[:2]
    msk = None if mask is None else mask_to_scale(mask, scale)
    mk = np.clip((np.asarray(markers, float) + 0.5) * scale - 0.5, 0, [h - 1, w - 1])
    return img, msk, mk


def extract_patches(image, markers, mask=None, size: int = 64, sigma: float = 15.0,
                    scale: float = 1.0) -> PatchSet:
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
        Gaussian disk sigma, px at the working scale (paper: 15).
    scale : float
        Working scale in (0, 1] (:func:`patch_geometry`): the image, mask
        and markers are downsampled by it before cutting.

    Returns
    -------
    PatchSet
    """
    img = check_image(image, name="image").astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    full = img.shape[:2]
    original = check_markers(markers, full)
    if int(size) != size or size < 16 or size % 2:
        raise InputError(f"patch size must be even and >= 16, got {size}.")
    if not (np.isfinite(scale) and 0 < scale <= 1):
        raise InputError(f"scale must be in (0, 1], got {scale}.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != full:
            raise InputError(f"mask shape {mask.shape} does not match the image {full}.")
    img, mask, m = to_scale(img, mask, original, float(scale))
    h, w = img.shape[:2]
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
    return PatchSet(x=x, outside=out, corners=corners, centres=centres, size=int(size), pad=pad,
                    shape=(h, w), scale=float(scale), markers=original, full_shape=full)


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


def dihedral_flags(codes) -> np.ndarray:
    """Codes 0..7 as (N, 3) booleans: (transpose, flip rows, flip cols), for the ops versions."""
    return (np.asarray(codes, np.int64)[:, None] & np.array(_STEPS)) > 0


def _dihedral_ops(x, flags, order):
    from keras import ops
    rank = len(x.shape)
    for bit in order:
        col = _STEPS.index(bit)
        flag = ops.reshape(flags[:, col], (-1,) + (1,) * (rank - 1))
        moved = ops.transpose(x, [0, 2, 1] + list(range(3, rank))) if bit == 1 else \
            ops.flip(x, axis=1 if bit == 2 else 2)
        x = ops.where(flag, moved, x)
    return x


def augment_ops(x, flags):
    """:func:`augment_np` in ``keras.ops``: x (N, k, k, ...), flags (N, 3) bool (:func:`dihedral_flags`)."""
    return _dihedral_ops(x, flags, _STEPS)


def invert_ops(y, flags):
    """Inverse of :func:`augment_ops`."""
    return _dihedral_ops(y, flags, _STEPS[::-1])
