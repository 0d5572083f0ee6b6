"""Fields of view: the bundled demo data, its generator, and user folders.

A *field* is one microscope field of view: one or more cell images
(fluorescence, bright-field), an optional nucleus image and, when known,
ground-truth label images for whole cells and nuclei. :class:`Field` holds
them; :func:`load_field` reads a folder in the layout below;
:func:`make_field` synthesises one.

Folder layout of a field (also what :func:`save_field` writes)::

    my_field/
        fluorescence.tif      cell image (any name not listed below is a cell channel)
        brightfield.tif       another cell channel, optional
        nucleus.tif           nucleus stain (DAPI/Hoechst), optional
        phase.tif / dic.tif   transmitted-light cell channels are named for their modality
        cells_gt.tif          ground-truth whole-cell labels, optional (0 = background)
        nuclei_gt.tif         ground-truth nucleus labels, optional
        markers.csv           one point per cell, optional: used when there is no nucleus
                              image (cellnb's row,col; Fiji's X,Y; napari's axis-0,axis-1)
        hint.tif              a few hand-labelled pixels for the mask, optional
                              (1 = cell, 2 = background, 0 = not labelled)

The synthetic generator is meant to be *hard*, like real adherent cells at
~70% confluence (A431 in the paper): cells of different sizes grow in
colonies with gaps; shapes are irregular and non-convex; borders between
touching cells follow each cell's own extent (a multiplicatively weighted,
distorted Voronoi partition), so they are *not* the midline between nuclei;
nuclei sit off-centre; some cells are dim; the fluorescence channel is
noisy, punctate and uneven, with bright junctions only on some cells; the
bright-field channel has weak contrast, halos, texture and uneven
illumination, and background debris appears in both.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .io import InputError, normalize, read_image, read_labels, read_markers, \
    write_image, write_labels, write_markers

__all__ = ["Field", "make_field", "save_field", "load_field", "load_fields", "demo_dir",
           "load_demo", "write_demo_data", "check_hint", "DEMO_FIELDS", "CELL_CHANNELS"]

#: channel names the pipeline knows; any other image file in a field folder is a cell channel
CELL_CHANNELS = ("fluorescence", "brightfield", "phase", "dic")
NUCLEUS = "nucleus"
GT_CELLS = "cells_gt"
GT_NUCLEI = "nuclei_gt"
MARKERS = "markers.csv"
HINT = "hint"

#: the bundled demo set: name -> generator arguments (fixed seeds)
DEMO_FIELDS: dict[str, dict] = {
    "field_01": dict(shape=(512, 512), seed=101, mean_radius=15.0),
    "field_02": dict(shape=(512, 512), seed=102, mean_radius=17.0),
    "field_03": dict(shape=(512, 512), seed=103, mean_radius=14.0),
    "field_04": dict(shape=(1024, 1024), seed=104, mean_radius=16.0),
}


@dataclass
class Field:
    """One field of view.

    Attributes
    ----------
    name : str
    images : dict of str -> ndarray, shape (H, W)
        Raw channels by name, e.g. ``{"fluorescence": ..., "nucleus": ...}``.
    cells, nuclei : ndarray of int, shape (H, W), or None
        Ground-truth labels when known; nucleus k belongs to cell k.
    markers : ndarray of float64, shape (N, 2), or None
        One (row, col) point per cell from the folder's ``markers.csv``; the
        pipeline uses them when the field has no nucleus image.
    hint : ndarray of int, shape (H, W), or None
        Hand-labelled pixels for the mask (1 = cell, 2 = background).
    path : Path or None
        Folder the field was read from.
    meta : dict
        Generator parameters for synthetic fields.
    """

    name: str
    images: dict[str, np.ndarray]
    cells: np.ndarray | None = None
    nuclei: np.ndarray | None = None
    markers: np.ndarray | None = None
    hint: np.ndarray | None = None
    path: Path | None = None
    meta: dict = dc_field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.images.values())).shape[:2]

    @property
    def nucleus(self) -> np.ndarray | None:
        return self.images.get(NUCLEUS)

    @property
    def cell_channels(self) -> list[str]:
        """Cell channel names: the known ones in :data:`CELL_CHANNELS` order, then others sorted.

        A fixed order, so that combined masks and models get the same name
        (``fluorescence+brightfield``) whatever order the files were read in.
        """
        known = [k for k in CELL_CHANNELS if k in self.images]
        return known + sorted(k for k in self.images if k != NUCLEUS and k not in known)

    def crop(self, rows: slice, cols: slice, name: str | None = None) -> "Field":
        """The field inside a rectangle: images, labels and hint cut, markers inside kept.

        Parameters
        ----------
        rows, cols : slice
            Pixel ranges (no step).
        name : str, optional
            Default ``<name>_crop``.

        Returns
        -------
        Field
            Markers are shifted to the crop and those outside it dropped;
            ground-truth labels keep their ids (cells cut by the border
            stay, partially).
        """
        h, w = self.shape
        r0, r1, _ = rows.indices(h)
        c0, c1, _ = cols.indices(w)
        if r1 - r0 < 8 or c1 - c0 < 8:
            raise InputError(f"{self.name}: crop {rows}, {cols} of a {self.shape} field holds "
                             "fewer than 8x8 pixels.")
        sl = (slice(r0, r1), slice(c0, c1))
        cut = (lambda a: None if a is None else a[sl].copy())
        mk = None
        if self.markers is not None:
            m = self.markers - [r0, c0]
            mk = m[(m[:, 0] >= 0) & (m[:, 0] <= r1 - r0 - 1) & (m[:, 1] >= 0) &
                   (m[:, 1] <= c1 - c0 - 1)]
        return Field(name=name or f"{self.name}_crop", images={k: v[sl].copy() for k, v in
                                                                self.images.items()},
                     cells=cut(self.cells), nuclei=cut(self.nuclei), markers=mk,
                     hint=cut(self.hint), path=self.path, meta=dict(self.meta))

    def stack(self, channels: Sequence[str]) -> np.ndarray:
        """Percentile-normalised channels stacked last.

        Parameters
        ----------
        channels : sequence of str
            Names from ``images`` (e.g. ``["fluorescence", "nucleus"]``).

        Returns
        -------
        ndarray, float32, shape (H, W, len(channels))
        """
        if isinstance(channels, str):
            channels = [channels]
        if not channels:
            raise InputError(f"{self.name}: choose at least one channel from "
                             f"{list(self.images)}.")
        missing = [c for c in channels if c not in self.images]
        if missing:
            raise InputError(f"{self.name}: no channel {missing}; this field has "
                             f"{list(self.images)}.")
        return np.stack([normalize(self.images[c]) for c in channels], axis=-1)


# --------------------------------------------------------------------------
# synthetic generator
# --------------------------------------------------------------------------
def _smooth_noise(rng, shape, sigma, n=1):
    """`n` smooth Gaussian random fields, each scaled to unit standard deviation."""
    out = []
    for _ in range(n):
        f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        out.append(f / (f.std() + 1e-12))
    return out if n > 1 else out[0]


def _place_cells(rng, shape, mean_radius, confluence):
    """Cell centres and radii, clustered into colonies, until `confluence` is covered."""
    h, w = shape
    # colonies: a smooth density; cells are only seeded where it is high
    density = _smooth_noise(rng, shape, sigma=max(h, w) / 10)
    density = (density - density.min()) / (np.ptp(density) + 1e-12)
    covered = np.zeros(shape, bool)
    centres, radii = [], []
    target = confluence * h * w
    n_covered = 0
    for _ in range(200000):
        if n_covered >= target:
            break
        r = float(np.clip(rng.lognormal(np.log(mean_radius), 0.22),
                          0.6 * mean_radius, 1.7 * mean_radius))
        c = rng.uniform(-0.5 * r, [h - 1 + 0.5 * r, w - 1 + 0.5 * r])
        cy, cx = int(np.clip(c[0], 0, h - 1)), int(np.clip(c[1], 0, w - 1))
        if rng.random() > 0.15 + 0.85 * density[cy, cx] ** 1.5:
            continue
        if centres:
            d = np.hypot(*(np.asarray(centres) - c).T)
            # overlap allowed (cells touch and press on each other), but no stacking
            if np.any(d < 0.8 * (np.asarray(radii) + r)):
                continue
        centres.append(c)
        radii.append(r)
        # mark the disc as covered, in a local window only
        y0, y1 = max(0, int(c[0] - r)), min(h, int(c[0] + r) + 2)
        x0, x1 = max(0, int(c[1] - r)), min(w, int(c[1] + r) + 2)
        if y0 < y1 and x0 < x1:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            win = covered[y0:y1, x0:x1]
            before = int(win.sum())
            win |= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= (0.95 * r) ** 2
            n_covered += int(win.sum()) - before
    return np.asarray(centres), np.asarray(radii)


def _territories(rng, shape, centres, radii):
    """Label image from irregular star-shaped cells competing for space.

    Each cell i has a normalised distance f_i(x) = |x - c_i| / R_i(theta),
    with R_i a random Fourier series in angle (lobes, elongation) and a
    smooth per-cell distortion. A pixel belongs to the cell with the smallest
    f_i, if that is below 1; so borders between touching cells are curved and
    shifted towards the smaller cell instead of lying midway.
    """
    h, w = shape
    best = np.full(shape, np.inf)
    labels = np.zeros(shape, np.int32)
    warp = _smooth_noise(rng, shape, sigma=6.0, n=3)
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        k = np.arange(2, 7)
        amp = rng.normal(0, 1, k.size) * np.array([0.22, 0.12, 0.10, 0.07, 0.05])
        phase = rng.uniform(0, 2 * np.pi, k.size)
        wts = rng.normal(0, 0.07, 3)
        rmax = r * (1 + np.abs(amp).sum()) + 2
        y0, y1 = int(max(0, np.floor(c[0] - rmax))), int(min(h, np.ceil(c[0] + rmax) + 1))
        x0, x1 = int(max(0, np.floor(c[1] - rmax))), int(min(w, np.ceil(c[1] + rmax) + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - c[0], xx - c[1]
        theta = np.arctan2(dy, dx)
        rad = r * (1 + (amp[:, None, None] * np.cos(k[:, None, None] * theta
                                                    + phase[:, None, None])).sum(0))
        rad = np.maximum(rad, 0.45 * r)
        f = np.hypot(dy, dx) / rad
        f = f * (1 + sum(wt * wp[y0:y1, x0:x1] for wt, wp in zip(wts, warp)))
        sub_best = best[y0:y1, x0:x1]
        win = (f < sub_best) & (f < 1.0)
        sub_best[win] = f[win]
        labels[y0:y1, x0:x1][win] = i
    return labels


def _clean_labels(labels, centres, min_area):
    """Keep each cell's component that holds (or is nearest) its centre; drop tiny cells."""
    out = np.zeros_like(labels)
    keep = []
    objs = ndi.find_objects(labels)
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        sub = labels[sl] == i
        comp, n = ndi.label(sub)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            sub = comp == (1 + int(np.argmax(sizes)))
        if sub.sum() < min_area:
            continue
        # fill holes inside the cell so it is a simply-connected territory
        sub = ndi.binary_fill_holes(sub) & ((labels[sl] == i) | (labels[sl] == 0))
        out[sl][sub] = len(keep) + 1
        keep.append(i - 1)
    return out, centres[keep]


def _place_nuclei(rng, cells, mean_radius):
    """Off-centre elliptical nuclei inside their cells; nucleus k belongs to cell k."""
    nuclei = np.zeros_like(cells)
    h, w = cells.shape
    for k, sl in enumerate(ndi.find_objects(cells), start=1):
        if sl is None:
            continue
        cell = cells[sl] == k
        inner = ndi.binary_erosion(cell, iterations=3)
        if inner.sum() < 10:
            inner = ndi.binary_erosion(cell, iterations=1)
        if inner.sum() < 4:
            continue
        # a nucleus size only loosely tied to the cell size
        area = cell.sum()
        req = np.sqrt(area / np.pi)
        a = float(np.clip(rng.normal(0.42, 0.06) * req, 4.0, 0.8 * req))
        b = a * rng.uniform(0.65, 1.0)
        ang = rng.uniform(0, np.pi)
        cy, cx = ndi.center_of_mass(inner)
        # off-centre: push towards a random direction, as far as the cell allows
        direction = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.0, 0.5) * req
        yy, xx = np.mgrid[0:cell.shape[0], 0:cell.shape[1]]
        for frac in (1.0, 0.6, 0.3, 0.0):
            ny = cy + frac * shift * np.sin(direction)
            nx = cx + frac * shift * np.cos(direction)
            u = ((yy - ny) * np.cos(ang) - (xx - nx) * np.sin(ang)) / a
            v = ((yy - ny) * np.sin(ang) + (xx - nx) * np.cos(ang)) / b
            ell = u ** 2 + v ** 2 <= 1
            nuc = ell & inner
            if nuc.sum() >= 0.75 * ell.sum():
                break
        if nuc.sum() < 8:
            nuc = inner & (((yy - cy) ** 2 + (xx - cx) ** 2) <= max(4.0, 0.3 * req) ** 2)
        lab, n = ndi.label(nuc)
        if n > 1:
            nuc = lab == 1 + np.argmax(np.bincount(lab.ravel())[1:])
        nuclei[sl][nuc] = k
    return nuclei


def _to_uint16(signal, rng, photons, read_noise, offset=100):
    """Poisson (shot) and Gaussian (read) noise, then 16-bit counts."""
    counts = rng.poisson(np.clip(signal, 0, None) * photons).astype(np.float64)
    counts += rng.normal(0, read_noise, signal.shape) + offset
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def _render(rng, cells, nuclei, mean_radius):
    """Nucleus, fluorescence and bright-field channels for given labels."""
    shape = cells.shape
    h, w = shape
    n = int(cells.max())
    fg = cells > 0
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    # uneven illumination: a tilted plane plus a slow blob, different per channel
    def illumination(strength):
        g = rng.normal(0, 1, 2)
        plane = g[0] * (yy - 0.5) + g[1] * (xx - 0.5)
        blob = _smooth_noise(rng, shape, sigma=max(h, w) / 5)
        f = 1 + strength * (0.6 * plane / (np.abs(g).sum() + 1e-9) + 0.4 * blob / 3)
        return np.clip(f, 0.4, 1.6)

    # per-cell properties (index 0 = background)
    bright = np.concatenate([[0], rng.uniform(0.55, 1.0, n)])
    dim = rng.random(n + 1) < 0.15
    bright[dim] *= rng.uniform(0.3, 0.5, dim.sum())
    junction = np.concatenate([[0], rng.uniform(0.0, 1.0, n) ** 2])

    # distance (px) to the cell's own border, for junction signal and BF shading
    boundary = np.zeros(shape, bool)
    boundary[:-1] |= cells[:-1] != cells[1:]
    boundary[1:] |= cells[:-1] != cells[1:]
    boundary[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    boundary[:, 1:] |= cells[:, :-1] != cells[:, 1:]
    d_edge = ndi.distance_transform_edt(~(boundary & fg))
    texture = _smooth_noise(rng, shape, sigma=2.5)
    nuc_mask = nuclei > 0
    nuc_soft = ndi.gaussian_filter(nuc_mask.astype(float), 1.2)

    # ---- nucleus (DAPI-like): per-nucleus brightness, chromatin texture
    nuc_b = np.concatenate([[0], rng.uniform(0.45, 1.0, n)])
    chrom = 1 + 0.25 * _smooth_noise(rng, shape, sigma=1.5)
    dapi = ndi.gaussian_filter(nuc_b[nuclei] * chrom * nuc_mask, 1.2)
    dapi = 0.04 + dapi * illumination(0.3)
    nucleus = _to_uint16(dapi, rng, photons=500, read_noise=6)

    # ---- fluorescence (anti-pY-like): dim cytoplasm, junctions on some cells,
    # focal-adhesion puncta, lower signal over the nucleus, debris, strong noise
    cyto = bright[cells] * (0.45 + 0.55 * junction[cells] * np.exp(-d_edge / 2.0))
    cyto *= 1 + 0.35 * texture
    cyto *= 1 - 0.35 * nuc_soft
    puncta = np.zeros(shape)
    n_p = int(fg.sum() / 30)
    py = rng.integers(0, h, n_p)
    px = rng.integers(0, w, n_p)
    # focal adhesions: mostly near the cell periphery
    on = fg[py, px] & (rng.random(n_p) < np.where(d_edge[py, px] < 5, 1.0, 0.25))
    puncta[py[on], px[on]] = rng.uniform(1.0, 3.5, on.sum()) * bright[cells[py[on], px[on]]]
    debris = np.zeros(shape)
    n_d = int(h * w / 6000)
    dy, dx = rng.integers(0, h, n_d), rng.integers(0, w, n_d)
    off = ~fg[dy, dx]
    debris[dy[off], dx[off]] = rng.uniform(5, 30, off.sum())
    fl = fg * np.clip(cyto, 0, None) + ndi.gaussian_filter(puncta, 1.0) * 4 \
        + ndi.gaussian_filter(debris, 1.5) * 3
    fl = ndi.gaussian_filter(fl, 1.0)
    fl = (0.08 + fl) * illumination(0.5)
    fluorescence = _to_uint16(fl, rng, photons=60, read_noise=4)

    # ---- bright-field: weak absorption, phase halo, granular texture, uneven light
    thick = ndi.gaussian_filter(fg.astype(float), 1.5) * (0.5 + 0.5 * (1 - np.exp(-d_edge / 6)))
    thick += 0.5 * nuc_soft
    halo = ndi.gaussian_filter(fg.astype(float), 4.0) - ndi.gaussian_filter(fg.astype(float), 1.0)
    gran = _smooth_noise(rng, shape, sigma=1.0) * fg * rng.uniform(0.6, 1.4)
    jline = (boundary & fg) * junction[cells] * 0.5
    # mean grey level inside cells stays close to the background: texture and halo are the cues
    bf = 1.0 - 0.015 * thick + 0.06 * halo + 0.05 * gran - 0.015 * ndi.gaussian_filter(jline, 0.8)
    bf -= 0.04 * ndi.gaussian_filter(debris > 0, 2.0)
    bf = bf * illumination(0.25)
    brightfield = _to_uint16(bf, rng, photons=2500, read_noise=8, offset=500)
    return {"fluorescence": fluorescence, "brightfield": brightfield, "nucleus": nucleus}


def make_field(shape: tuple[int, int] = (512, 512), seed: int = 0, mean_radius: float = 16.0,
               confluence: float = 0.7, name: str | None = None) -> Field:
    """Synthesise one crowded field of adherent cells with ground truth.

    Parameters
    ----------
    shape : (int, int)
        Height and width in pixels (>= 64 each).
    seed : int
        Random seed; the same seed gives the same field, bit for bit.
    mean_radius : float
        Typical cell radius in pixels (cells vary from about 0.6x to 1.7x).
        The paper's 20x images of A431 cells correspond to roughly 12-20.
    confluence : float
        Fraction of the field to cover with cells, in (0, 0.95].
    name : str, optional
        Field name (default ``"synthetic_<seed>"``).

    Returns
    -------
    Field
        ``images`` holds uint16 ``fluorescence``, ``brightfield`` and
        ``nucleus`` channels; ``cells`` and ``nuclei`` hold int32 labels where
        nucleus k belongs to cell k.
    """
    if len(shape) != 2 or min(shape) < 64:
        raise InputError(f"make_field: shape must be (H, W) with both >= 64, got {shape}.")
    if not (0 < confluence <= 0.95):
        raise InputError(f"make_field: confluence must be in (0, 0.95], got {confluence}.")
    if not (4 <= mean_radius <= min(shape) / 4):
        raise InputError(f"make_field: mean_radius must be in [4, {min(shape) / 4}], got "
                         f"{mean_radius}.")
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    centres, radii = _place_cells(rng, shape, mean_radius, confluence)
    cells = _territories(rng, shape, centres, radii)
    cells, centres = _clean_labels(cells, centres, min_area=0.25 * np.pi * mean_radius ** 2)
    nuclei = _place_nuclei(rng, cells, mean_radius)
    # a cell whose nucleus could not be placed is not a cell the method can find
    has_nuc = np.zeros(cells.max() + 1, bool)
    has_nuc[np.unique(nuclei)] = True
    if not has_nuc[1:].all():
        keep = np.flatnonzero(has_nuc)
        remap = np.zeros(cells.max() + 1, np.int32)
        remap[keep] = np.arange(len(keep))
        cells, nuclei = remap[cells], remap[nuclei]
    images = _render(rng, cells, nuclei, mean_radius)
    meta = dict(shape=list(shape), seed=int(seed), mean_radius=float(mean_radius),
                confluence=float(confluence), n_cells=int(cells.max()),
                foreground_fraction=float((cells > 0).mean()), generator="cellnb.datasets.make_field")
    return Field(name=name or f"synthetic_{seed}", images=images, cells=cells.astype(np.int32),
                 nuclei=nuclei.astype(np.int32), meta=meta)


# --------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------
def save_field(f: Field, folder: str | Path) -> Path:
    """Write a field in the documented folder layout (TIFF, zlib-compressed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for ch, img in f.images.items():
        write_image(folder / f"{ch}.tif", img)
    if f.cells is not None:
        write_labels(folder / f"{GT_CELLS}.tif", f.cells)
    if f.nuclei is not None:
        write_labels(folder / f"{GT_NUCLEI}.tif", f.nuclei)
    if f.markers is not None:
        write_markers(folder / MARKERS, f.markers)
    if f.hint is not None:
        write_labels(folder / f"{HINT}.tif", f.hint)
    if f.meta:
        (folder / "meta.json").write_text(json.dumps(f.meta, indent=2) + "\n")
    return folder


def load_field(folder: str | Path) -> Field:
    """Read a field folder (see the module docstring for the layout).

    Raises
    ------
    InputError
        Missing folder, no image at all (a nucleus image alone is a field,
        for the markers step), images of different shapes, a
        multi-channel file (store one channel per file), a bad
        ``markers.csv`` or a ``hint.tif`` with values other than 0, 1, 2.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; a field is a folder of TIFF/PNG files "
                         "(see cellnb.datasets for the layout).")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".tif", ".tiff", ".png") and not p.name.startswith("."))
    images, cells, nuclei, hint = {}, None, None, None
    for p in files:
        stem = p.stem.lower()
        if stem == GT_CELLS:
            cells = read_labels(p)
        elif stem == GT_NUCLEI:
            nuclei = read_labels(p)
        elif stem == HINT:
            hint = check_hint(read_labels(p), name=str(p))
        else:
            img = read_image(p)
            if img.ndim != 2:
                raise InputError(f"{p}: has {img.shape[-1]} channels; store one channel per "
                                 "file (e.g. fluorescence.tif, brightfield.tif).")
            images[stem] = img
    if not images:
        # a nucleus image alone is a field too: the markers step (notebook 01) needs no more
        raise InputError(f"{folder}: no image found; add a cell image (e.g. fluorescence.tif, "
                         "phase.tif) and/or nucleus.tif (found: "
                         + (", ".join(p.name for p in files) or "nothing") + ").")
    shapes = {k: v.shape for k, v in images.items()}
    if cells is not None:
        shapes[GT_CELLS] = cells.shape
    if nuclei is not None:
        shapes[GT_NUCLEI] = nuclei.shape
    if hint is not None:
        shapes[HINT] = hint.shape
    if len(set(shapes.values())) > 1:
        raise InputError(f"{folder}: images have different shapes {shapes}; all channels of "
                         "a field must be the same size.")
    markers = None
    if (folder / MARKERS).exists():
        markers = read_markers(folder / MARKERS, shape=next(iter(shapes.values())))
    meta = {}
    if (folder / "meta.json").exists():
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{folder / 'meta.json'}: not valid JSON ({exc}); fix or delete "
                             "it (it only holds generator parameters).") from None
    return Field(name=folder.name, images=images, cells=cells, nuclei=nuclei, markers=markers,
                 hint=hint, path=folder, meta=meta)


def check_hint(hint, shape=None, name: str = "hint") -> np.ndarray:
    """Validate a hint image: 0 = not labelled, 1 = cell, 2 = background.

    Returns
    -------
    ndarray of uint8, shape (H, W)
    """
    from .io import check_labels
    h = check_labels(hint, name=name, shape=shape)
    bad = np.setdiff1d(np.unique(h), [0, 1, 2])
    if bad.size:
        raise InputError(f"{name}: a hint holds 0 (not labelled), 1 (cell) and 2 (background); "
                         f"found the value(s) {bad[:5].tolist()}.")
    if not ((h == 1).any() and (h == 2).any()):
        raise InputError(f"{name}: a hint needs some pixels labelled 1 (cell) and some 2 "
                         "(background).")
    return h.astype(np.uint8)


def load_fields(folder: str | Path, names: Sequence[str] | None = None) -> list[Field]:
    """Read every field subfolder of `folder` (or only `names`), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: data folder not found.")
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        missing = set(names) - {p.name for p in subs}
        if missing:
            raise InputError(f"{folder}: no field(s) {sorted(missing)}; found "
                             f"{[p.name for p in subs]}.")
        subs = [p for p in subs if p.name in names]
    if not subs:
        raise InputError(f"{folder}: holds no field folders.")
    return [load_field(p) for p in subs]


def write_demo_data(out: str | Path, names: Sequence[str] | None = None) -> Path:
    """Generate the bundled demo fields (fixed seeds) into `out`."""
    out = Path(out)
    for name in names or DEMO_FIELDS:
        save_field(make_field(name=name, **DEMO_FIELDS[name]), out / name)
    return out


def demo_dir() -> Path:
    """Folder of the bundled demo fields.

    The repository's ``data/demo`` when present (editable install); otherwise
    the fields are generated once into ``~/.cache/cellnb/demo`` (same seeds,
    same pixels).
    """
    repo = Path(__file__).resolve().parents[1] / "data" / "demo"
    if all((repo / n / "fluorescence.tif").exists() for n in DEMO_FIELDS):
        return repo
    cache = Path.home() / ".cache" / "cellnb" / "demo"
    todo = [n for n in DEMO_FIELDS if not (cache / n / "meta.json").exists()]
    if todo:
        write_demo_data(cache, todo)
    return cache


def load_demo(names: Sequence[str] | str | None = None) -> list[Field]:
    """Load bundled demo fields (all four by default)."""
    return load_fields(demo_dir(), names)
