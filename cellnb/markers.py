"""Step 1: one marker per cell, from a nucleus image (or, for phase contrast, the cell image).

The method is marker-controlled: every marker becomes one patch, one cell.
Markers are nucleus centroids, found with classical scikit-image steps, as
CellProfiler does in the paper:

1. denoise (Gaussian), 2. global threshold (Otsu), 3. drop specks,
4. split touching nuclei (distance-transform watershed), 5. centroids.

Sizes default from the image itself: the typical nucleus radius is measured
from the isolated objects after thresholding, and the minimum distance
between markers and the minimum object size follow from it, so nothing is
hand-tuned per dataset.

Without a nucleus stain, :func:`phase_markers` finds one marker per cell in
a phase-contrast image itself: its dark cell bodies (darker than the
background by some noise standard deviations, hysteresis-thresholded),
one marker at the deepest point of each body; none near a dark structure far
longer than any cell (:func:`long_dark_structures`: a culture insert's wall,
a scratch, a fibre).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

from .io import InputError, check_image, check_markers, normalize

__all__ = ["segment_nuclei", "markers_from_labels", "find_markers", "estimate_nucleus_radius",
           "detect_blobs", "phase_markers", "join_split_bodies", "long_dark_structures",
           "rounded_cells", "rounded_cell_areas", "body_depth"]


def _nucleus_plane(image) -> np.ndarray:
    img = check_image(image, name="nucleus image")
    if img.ndim == 3:
        if img.shape[-1] != 1:
            raise InputError(f"nucleus image: got {img.shape[-1]} channels; pass the single "
                             "nucleus channel, shape (H, W).")
        img = img[..., 0]
    return normalize(img)


def estimate_nucleus_radius(binary: np.ndarray) -> float:
    """Typical nucleus radius (px) from a foreground mask of nuclei.

    The median equivalent radius of the connected objects: the median is
    barely moved by the few merged pairs and specks.

    Parameters
    ----------
    binary : ndarray of bool, shape (H, W)

    Returns
    -------
    float
        Radius in pixels; raises if there are no objects.
    """
    lab = measure.label(binary)
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas >= 4]
    if areas.size == 0:
        raise InputError("nucleus image: no nucleus found after thresholding; is this the "
                         "nucleus channel, and does it contain stained nuclei?")
    return float(np.sqrt(np.median(areas) / np.pi))


def segment_nuclei(image, sigma: float = 1.0, threshold: float | None = None,
                   min_distance: int | None = None, min_area: int | None = None
                   ) -> np.ndarray:
    """Nucleus instance labels from a nucleus-stain image.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Nucleus image (DAPI, Hoechst, or a synthetic nucleus image).
    sigma : float
        Gaussian denoising sigma in pixels.
    threshold : float, optional
        Threshold on the percentile-normalised, smoothed image (about 0..1).
        Default: Otsu's threshold.
    min_distance : int, optional
        Minimum distance between two nucleus centres, px. Default: 0.7 x
        the typical nucleus radius measured on the image.
    min_area : int, optional
        Objects smaller than this (px) are dropped as specks. Default: 0.2 x
        the typical nucleus area.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 = background, 1..N nuclei in raster order of their first pixel.
    """
    if sigma < 0:
        raise InputError(f"segment_nuclei: sigma must be >= 0, got {sigma}.")
    img = _nucleus_plane(image)
    smooth = filters.gaussian(img, sigma=sigma) if sigma > 0 else img
    thr = filters.threshold_otsu(smooth) if threshold is None else float(threshold)
    binary = smooth > thr
    if not binary.any():
        raise InputError(f"nucleus image: nothing is above the threshold {thr:.3g}; lower "
                         "`threshold` or check the channel.")
    binary = ndi.binary_fill_holes(ndi.binary_opening(binary, morphology.disk(1)))
    radius = estimate_nucleus_radius(binary)
    if min_area is None:
        min_area = max(4, int(0.2 * np.pi * radius ** 2))
    if min_distance is None:
        min_distance = max(2, int(round(0.7 * radius)))
    binary = morphology.remove_small_objects(binary, max_size=max(1, min_area - 1))
    components = measure.label(binary)
    # distance-transform watershed splits touching nuclei; smoothing the
    # distance map keeps one peak per slightly irregular nucleus
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(binary), 1.0)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=components,
                           exclude_border=False)
    seeds = np.zeros(binary.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-dist, seeds, mask=binary)
    # components without a peak (flat plateaus) still count as one nucleus
    missing = np.setdiff1d(np.unique(components[binary]), np.unique(components[labels > 0]))
    if missing.size:
        extra = np.isin(components, missing)
        labels[extra] = components[extra] + labels.max()
    labels = morphology.remove_small_objects(labels, max_size=max(1, min_area - 1))
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32)


def markers_from_labels(labels) -> np.ndarray:
    """Centroids of labelled objects.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
        (row, col) of each object's centroid, in label order.
    """
    props = measure.regionprops(np.asarray(labels))
    return np.array([p.centroid for p in props], dtype=float).reshape(-1, 2)


def find_markers(image, sigma: float = 1.0, threshold: float | None = None,
                 min_distance: int | None = None, min_area: int | None = None) -> np.ndarray:
    """Marker positions (nucleus centroids) from a nucleus image.

    Parameters are those of :func:`segment_nuclei`.

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
        (row, col) positions; marker k (0-based) becomes cell label k + 1.

    Raises
    ------
    InputError
        If the image is invalid or no nucleus is found.

    Examples
    --------
    >>> from cellnb import datasets, markers
    >>> field = datasets.make_field((128, 128), seed=0)
    >>> m = markers.find_markers(field.nucleus)
    >>> m.shape[1]
    2
    """
    m = markers_from_labels(segment_nuclei(image, sigma, threshold, min_distance, min_area))
    if len(m) == 0:
        raise InputError("nucleus image: no marker found; check the channel or lower "
                         "`threshold`/`min_area`.")
    return m


def detect_blobs(image, radius: float, threshold: float = 0.5, min_distance: int | None = None
                 ) -> np.ndarray:
    """Markers as local maxima of a blob-filtered probability image.

    Used for synthetic nucleus images, whose values are probabilities: the
    image is smoothed with a Gaussian matched to the expected nucleus
    radius (a Laplacian-of-Gaussian-like blob filter for filled discs), and
    maxima above `threshold` at least `min_distance` apart are kept.

    Parameters
    ----------
    image : array_like, shape (H, W), float in [0, 1]
    radius : float
        Expected nucleus radius, px.
    threshold : float
        Minimum smoothed probability at a marker.
    min_distance : int, optional
        Default ``0.7 * radius``.

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
    """
    img = check_image(image, name="probability image", allow_channels=False).astype(np.float32)
    if radius <= 0:
        raise InputError(f"detect_blobs: radius must be > 0, got {radius}.")
    sm = ndi.gaussian_filter(img, radius / 2.0)
    md = max(2, int(round(0.7 * radius))) if min_distance is None else int(min_distance)
    pk = peak_local_max(sm, min_distance=md, threshold_abs=threshold, exclude_border=False)
    return pk.astype(float).reshape(-1, 2)


def body_depth(body) -> np.ndarray:
    """Distance (px) of each body pixel to the nearest pixel outside the body or the image.

    A body cut by the image's edge is deepest inside the image, not on the
    edge: :func:`scipy.ndimage.distance_transform_edt` alone sees no
    background beyond the edge, so the deepest pixel of a cut body lay on the
    last row or column, in the background just beyond the annotated cell
    (on the 12 Usiigaci fields, 15 of the 138 annotated cells without a marker
    strictly inside them had their marker there, 1-6 px outside the cell; the
    marker scores' 3-px tolerance had counted some of them already).

    Parameters
    ----------
    body : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of float64, shape (H, W)
        0 outside the bodies.
    """
    return ndi.distance_transform_edt(np.pad(np.asarray(body, bool), 1))[1:-1, 1:-1]


def phase_markers(image, low: float = 6.0, high: float = 12.0, closing: int = 3,
                  min_area: int = 250, length: float = 40.0, clearance: float = 4.0,
                  join: float = 2.0, halo: float = 10.0, return_bodies: bool = False):
    """One marker per cell from a phase-contrast image, without a nucleus stain or clicks.

    A phase-contrast cell body (nucleus and thick cytoplasm) is darker than
    the background; the thin lamellae and the bright halo are not. The
    steps: darkness in noise standard deviations
    (:func:`cellnb.mask.phase_darkness`); hysteresis threshold (pixels
    above `low` that connect to a pixel above `high`); a closing of radius
    `closing` joins a body broken by its bright nucleoli; bodies smaller than
    `min_area` px are dropped (debris); one marker at each body's deepest
    pixel (the maximum of its distance transform, :func:`body_depth`, the
    image's outside counting as outside), as the annotators' marker
    files place them; no marker within `clearance` median body radii of a
    dark structure longer than `length` of them (:func:`long_dark_structures`);
    last, bodies of one cell are joined (:func:`join_split_bodies`: closer
    than `join` median body radii, no bright halo between them).

    Measured on the 12 Usiigaci NIH/3T3 fields of ``../shared/data``
    (10x, cells ~40-150 px long; ``bench/real_data.py``): F1 0.79 against the
    annotated cells (precision 0.83, recall 0.77); with one cell's split
    bodies joined, F1 0.806 (precision 0.866, recall 0.760); with a body cut
    by the image's edge marked inside it (:func:`body_depth`), F1 0.812
    (precision 0.874, recall 0.764). Misses: touching
    cells whose bodies merge (one marker for two cells). False markers: dark
    debris and unannotated cells. The defaults were chosen on those fields as a
    kind (all 12 at once), for images at that magnification; scale
    `min_area` with the square of the magnification.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Phase-contrast image, raw or normalised (cells dark, halo bright).
    low, high : float
        Hysteresis thresholds of the darkness, in noise standard deviations.
    closing : int
        Radius (px) of the closing that joins pieces of one body; 0 = none.
    min_area : int
        Smallest body (px) that makes a marker.
    length, clearance : float
        In median body radii: bodies within `clearance` of a dark structure
        longer than `length` make no marker (``length=np.inf``: keep all).
    join, halo : float
        Two bodies less than `join` median body radii apart (0: never) with
        no pixel between them brighter than the local background by `halo`
        noise standard deviations make one marker (:func:`join_split_bodies`).
    return_bodies : bool
        Also return the bodies (for :func:`cellnb.synthetic_nuclei.self_trained_markers`).

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
        (row, col) positions, in raster order of the bodies.
    bodies : ndarray of int32, shape (H, W)
        Only with ``return_bodies=True``: 0 = no body, k = the body of marker k.

    Raises
    ------
    InputError
        For a bad image or parameter, or when no body is found.
    """
    from .mask import phase_darkness
    img = check_image(image, name="phase-contrast image", allow_channels=False)
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
        raise InputError(f"phase_markers: need 0 < low <= high, got low={low}, high={high}.")
    if closing < 0 or min_area < 1:
        raise InputError(f"phase_markers: closing must be >= 0 and min_area >= 1, got "
                         f"{closing} and {min_area}.")
    _check_structure(length, clearance, "phase_markers")
    _check_join(join, halo, "phase_markers")
    darkness = phase_darkness(img)
    dark = filters.apply_hysteresis_threshold(darkness, low, high)
    body = dark
    if closing:
        body = morphology.closing(body, morphology.disk(closing))
    body = morphology.remove_small_holes(body, max_size=min_area - 1)
    body = morphology.opening(body, morphology.disk(2))    # cut thin bridges and spurs
    lab, n = ndi.label(body)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    keep = np.flatnonzero(area[1:] >= min_area) + 1
    if len(keep) == 0:
        raise InputError("phase-contrast image: no cell body found (no region darker than the "
                         f"background by {high} noise standard deviations and {min_area} px "
                         "large); check that it is phase contrast with dark cells, or give "
                         "markers (a nucleus image or markers.csv).")
    depth = body_depth(body)
    mk = np.array(ndi.maximum_position(depth, lab, keep), float).reshape(-1, 2)
    radius = float(np.sqrt(np.median(area[keep]) / np.pi))
    near = _near_long(dark, radius, length, clearance)
    away = ~near[mk[:, 0].astype(int), mk[:, 1].astype(int)]
    if not away.any():
        raise InputError("phase-contrast image: every dark cell body lies along a dark structure "
                         f"longer than {length:g} body radii (an insert's wall, a scratch); "
                         "crop the image to the cells, pass a larger `length`, or give markers "
                         "(a nucleus image or markers.csv).")
    keep, mk = keep[away], mk[away]
    # the kept bodies, numbered as their markers
    index = np.zeros(n + 1, np.int32)
    index[keep] = np.arange(1, len(keep) + 1)
    mk, bodies = join_split_bodies(mk, index[lab], darkness, radius, join, halo)
    return (mk, bodies) if return_bodies else mk


def _check_join(join: float, halo: float, who: str) -> None:
    if not (np.isfinite(join) and join >= 0 and np.isfinite(halo)):
        raise InputError(f"{who}: need a finite join >= 0 (median body radii; 0 = never join) "
                         f"and a finite halo (noise standard deviations), got join={join}, "
                         f"halo={halo}.")


#: a body marker lies at most this many median body radii from its body's far end (only bounds
#: the pairs :func:`join_split_bodies` looks at: a body elongated 3:1 reaches ~1.7 radii)
_BODY_SPAN = 3.0


def join_split_bodies(markers, bodies, darkness, radius: float, join: float = 2.0,
                      halo: float = 10.0):
    """Join the dark bodies of one phase-contrast cell into one body and one marker.

    A cell's dark body can fall apart at the threshold: the nucleus and a
    thick part of the cytoplasm, with a lighter band of cytoplasm between
    them, make two bodies and two markers. Between two *cells* there is
    background or the bright halo of their borders. Two bodies are joined
    when the straight line between their markers crosses less than `join`
    median body radii outside both bodies, and no pixel of that stretch is
    brighter than the local background by more than `halo` noise standard
    deviations (darkness > -`halo`); groups join transitively, and the group
    keeps the marker of its deepest body (the largest distance to the
    body's border, the rule every body's marker follows).

    Measured on the 12 Usiigaci NIH/3T3 fields (``../shared/data``; 10x, body
    radius ~10 px): of 1 055 pairs of body markers within 8 body radii of
    each other, 55 lie in one annotated cell; those have a median gap of 1.2
    radii and a darkest-to-brightest step of -14 noise sd along it, the
    pairs in two touching cells 3.8 radii and -55 (the halo). The defaults
    (chosen over all 12 fields at once: gaps 1-2 radii, halos 0-15 sd) join
    19 pairs in one cell, 6 pairs of two cells and 2 with debris: the
    bodies' F1 0.796 -> 0.806 (precision 0.840 -> 0.866), and without clicks
    ``segment``'s AP@0.5 0.456 -> 0.475 (``bench/real_data.py --markers
    image``; issue 20).

    Parameters
    ----------
    markers : ndarray, shape (N, 2)
        One marker per body, marker k in body k + 1.
    bodies : ndarray of int, shape (H, W)
        0 = no body, k + 1 = the body of marker k.
    darkness : ndarray of float, shape (H, W)
        :func:`cellnb.mask.phase_darkness` of the image (noise sd; the halo is negative).
    radius : float
        Median body radius (px).
    join, halo : float
        Largest gap (median body radii; 0 = join nothing) and brightest halo
        (noise sd) between two bodies of one cell.

    Returns
    -------
    markers : ndarray of float64, shape (M, 2), M <= N
        In the order of the groups' first bodies.
    bodies : ndarray of int32, shape (H, W)
        The joined bodies, numbered as the returned markers.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    mk = np.asarray(markers, float).reshape(-1, 2)
    bod = np.asarray(bodies)
    if bod.shape != np.shape(darkness):
        raise InputError(f"join_split_bodies: bodies {bod.shape} and darkness "
                         f"{np.shape(darkness)} differ in shape.")
    _check_join(join, halo, "join_split_bodies")
    pairs = []
    if join > 0 and len(mk) > 1:
        for a, b in cKDTree(mk).query_pairs(join * radius + 2 * _BODY_SPAN * radius):
            n = int(np.ceil(np.linalg.norm(mk[a] - mk[b]))) + 1
            rr, cc = np.round(mk[a][None] + np.linspace(0, 1, n)[:, None]
                              * (mk[b] - mk[a])[None]).astype(int).T
            gap = (bod[rr, cc] != a + 1) & (bod[rr, cc] != b + 1)
            if gap.sum() < join * radius and (not gap.any() or darkness[rr, cc][gap].min() > -halo):
                pairs.append((a, b))
    if not pairs:
        return mk, bod.astype(np.int32)
    a, b = np.array(pairs).T
    # groups numbered in the order of their first bodies
    _, group = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(mk),) * 2),
                                    directed=False)
    depth = body_depth(bod > 0)[mk[:, 0].astype(int), mk[:, 1].astype(int)]
    # each group's deepest body (the first of equals), found by sorting on (group, -depth)
    order = np.lexsort((np.arange(len(mk)), -depth, group))
    keep = order[np.r_[True, np.diff(group[order]) > 0]]
    return mk[keep], np.r_[0, group + 1].astype(np.int32)[bod]


def _check_structure(length: float, clearance: float, who: str) -> None:
    if not (length > 0 and np.isfinite(clearance) and clearance >= 0):
        raise InputError(f"{who}: need length > 0 (np.inf: no structure is too long) and a "
                         f"finite clearance >= 0, got length={length}, clearance={clearance}.")


def _near_long(dark: np.ndarray, radius: float, length: float, clearance: float) -> np.ndarray:
    """Pixels within ``clearance * radius`` of a component of `dark` longer than ``length * radius``."""
    lab, _ = ndi.label(dark)
    extent = np.array([0] + [max(r.stop - r.start, c.stop - c.start)
                             for r, c in ndi.find_objects(lab)])
    long = (extent > length * radius)[lab]
    if not long.any():
        return long
    return ndi.distance_transform_edt(~long) <= clearance * radius


def long_dark_structures(image, radius: float, length: float = 40.0, clearance: float = 4.0,
                         low: float = 6.0, high: float = 12.0) -> np.ndarray:
    """Where a phase-contrast image has a dark structure far longer than any cell.

    The wall of a culture insert, a scratch or a fibre is darker than the
    background, as a cell body is, but runs straight across much of the
    field: a dark region (the hysteresis threshold of :func:`phase_markers`)
    whose bounding box is longer than `length` median body radii. Markers
    within `clearance` radii of one sit on the artefact or its out-of-focus
    band, not on a cell. A cell's dark body spans a few radii, and touching
    cells' bodies joined in a confluent field at most 25 (Usiigaci set13).

    Measured on the 12 Usiigaci NIH/3T3 fields of ``../shared/data`` (10x,
    body radius 12-15 px): only the insert walls along the edge of set30 and
    set40 (72-75 radii, and a 42-radius edge of the same wall on set40) are
    longer than 40; the markers of
    :func:`cellnb.synthetic_nuclei.self_trained_markers` near them drop from
    both fields, 8 false and 1 true (clearance 3, 4 or 5 alike).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Phase-contrast image, raw or normalised (cells dark, halo bright).
    radius : float
        The median cell body radius (px), e.g. from :func:`phase_markers`'
        bodies.
    length, clearance : float
        In body radii: how long a dark structure must be, and how far from
        it a pixel is still near.
    low, high : float
        Hysteresis thresholds of the darkness (noise standard deviations).

    Returns
    -------
    ndarray of bool, shape (H, W)
        True near such a structure (all False where there is none).

    Raises
    ------
    InputError
        For a bad image or parameter.
    """
    from .mask import phase_darkness
    img = check_image(image, name="phase-contrast image", allow_channels=False)
    _check_structure(length, clearance, "long_dark_structures")
    if not (np.isfinite(radius) and radius > 0 and 0 < low <= high):
        raise InputError(f"long_dark_structures: need radius > 0 and 0 < low <= high, got "
                         f"radius={radius}, low={low}, high={high}.")
    dark = filters.apply_hysteresis_threshold(phase_darkness(img), low, high)
    return _near_long(dark, float(radius), length, clearance)


def rounded_cell_areas(image, bright: float = 8.0, ring: float = 35.0, centre: float = -3.0,
                       fade: float = 25.0, band: int = 6, min_area: int = 20,
                       max_area: int = 3000) -> list[tuple[tuple, tuple, np.ndarray]]:
    """Each rounded cell of :func:`rounded_cells` with the area a person draws for it.

    The search of :func:`rounded_cells` (same parameters, same order) without
    the spacing to other markers; :func:`cellnb.mask.halo_rings` puts the
    areas of the marked ones into the foreground mask.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Phase-contrast image, raw or normalised (cells dark, halo bright).
    bright, ring, centre, fade, band, min_area, max_area
        As in :func:`rounded_cells`.

    Returns
    -------
    list of (centroid, box, area)
        `centroid`, tuple of float: the hole's centroid (row, col); `box`,
        tuple of slice: a box round the cell in the image; `area`, ndarray
        of bool, shape of the box: the whole cell within `box`, the hole and
        the bright pixels up to `band` px out of it (the thick ring), holes
        filled.

    Raises
    ------
    InputError
        For a bad image or parameter.
    """
    return _rounded_search(image, bright, ring, centre, fade, band, min_area, max_area)[0]


def _rounded_search(image, bright, ring, centre, fade, band, min_area, max_area):
    """:func:`rounded_cell_areas`, and the brightness (noise sd) it searched."""
    img = check_image(image, name="phase-contrast image", allow_channels=False)
    numbers = (bright, ring, centre, fade)
    if (not all(np.isfinite(numbers)) or min(bright, ring) < 0 or band < 1
            or not 1 <= min_area <= max_area):
        raise InputError(f"rounded cells: need bright, ring >= 0, a finite centre and fade, "
                         f"band >= 1 and 1 <= min_area <= max_area; got "
                         f"bright={bright}, ring={ring}, centre={centre}, fade={fade}, "
                         f"band={band}, min_area={min_area}, max_area={max_area}.")
    from .mask import phase_darkness
    level = -phase_darkness(img)
    lit = level > bright
    holes, _ = ndi.label(ndi.binary_fill_holes(lit) & ~lit)
    found = []
    for p in measure.regionprops(holes):
        if not min_area <= p.area <= max_area:
            continue
        box = tuple(slice(max(lo - 3 * band - 3, 0), hi + 3 * band + 3)
                    for lo, hi in zip(p.bbox[:2], p.bbox[2:]))
        out = ndi.distance_transform_edt(holes[box] != p.label)
        hole, rim = out == 0, (out > 0) & (out <= band)
        beyond = (out > 2 * band) & (out <= 3 * band)
        if (np.median(level[box][hole]) > centre or lit[box][rim].mean() < 0.9
                or np.median(level[box][rim]) < ring or np.median(level[box][beyond]) > fade):
            continue
        found.append((p.centroid, box, ndi.binary_fill_holes(hole | (lit[box] & (out <= band)))))
    return found, level


#: :func:`rounded_cells`: a candidate nearer than the spacing to another marker is still a cell
#: of its own when the straight line between them crosses a pixel this bright (noise sd): the
#: thick rings of two touching rounded cells, or of a rounded cell on a flat one, between them.
ROUNDED_APART = 50.0


def rounded_cells(image, markers=None, spacing: float = 20.0, bright: float = 8.0,
                  ring: float = 35.0, centre: float = -3.0, fade: float = 25.0, band: int = 6,
                  min_area: int = 20, max_area: int = 3000,
                  apart: float | None = ROUNDED_APART) -> np.ndarray:
    """Rounded phase-contrast cells: a thick, very bright ring round a grey or dark centre.

    A cell that rounds up to divide or detach is thick, so its halo is the
    brightest thing in a phase-contrast field, a closed ring round a centre
    that is darker than the background but has no flat dark body:
    :func:`phase_markers` (and a detector trained on its bodies) misses it.
    Steps: the brightness above the local background in noise standard
    deviations (the negative of :func:`cellnb.mask.phase_darkness`); the
    holes of the pixels brighter than `bright`. A hole of `min_area` to
    `max_area` px is a rounded cell when

    * its median is darker than the background by at least ``-centre``
      (a thick cell's centre; bare background enclosed by bright debris
      is not),
    * the `band` px round it are at least 90% brighter than `bright`, with
      a median above `ring` (a closed, thick, very bright ring),
    * and two to three band widths out the median has fallen below `fade`
      (a ring, not a hole in a bright area such as the out-of-focus band
      along a culture insert's edge);

    its marker is the hole's centroid. A candidate within `spacing` px of a
    given marker or of an earlier candidate is taken for that cell and
    dropped, unless that marker lies outside the candidate's area (hole and
    ring, :func:`rounded_cell_areas`) and the straight line to it crosses a
    pixel brighter than `apart`: two touching rounded cells (a pair just
    divided) and a rounded cell lying on a flat cell have their thick rings
    between the two markers; a second hole in one cell mostly does not
    (4 of 5 such candidates on the 12 fields below).

    Measured on the 12 Usiigaci NIH/3T3 fields of ``../shared/data`` (10x;
    added to the markers of
    :func:`cellnb.synthetic_nuclei.self_trained_markers`, spacing 1.5 median
    body radii; ``bench/real_data.py --markers image``): marker F1 0.809 ->
    0.831, precision 0.799 -> 0.800, recall 0.829 -> 0.873 (42 markers
    added, 36 on annotated cells that had none).
    The settings lie on a plateau over all 12 fields at once (bright 8-12,
    ring 30-40, centre 0 or -3, spacing 15-20 px, smallest hole 20-40 px:
    F1 0.829-0.831); a ring threshold of 25, a centre of 0 or no `fade`
    condition also take holes in an insert's out-of-focus band (set40: F1
    0.731 -> 0.700-0.729 instead of 0.737).
    The `apart` exception, measured the same way (seed 0): 7 markers more,
    5 on annotated cells that had none (rounded cells touching another
    rounded cell, rounded cells lying on a flat one) and 2 second markers
    of a marked cell (two holes in one rounded cell; a hole among bright
    granules inside a flat cell); marker F1 0.855 -> 0.857, ``segment``'s
    mIOU / AP@0.5 0.572 / 0.538 -> 0.575 / 0.541 (set13 +0.040, set31
    +0.027, set10 -0.030, the others unchanged). On the markers found before
    it, `apart` 45-52 picks the same candidates; 35 adds a second hole of a
    marked cell and one on background.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Phase-contrast image, raw or normalised (cells dark, halo bright).
    markers : array_like, shape (N, 2), optional
        Markers already found; rounded cells near them are not added.
    spacing : float
        Smallest distance (px) of an added marker from every other marker.
    bright, ring : float
        Brightness (noise standard deviations) of the ring's pixels, and
        the smallest median brightness of the ring.
    centre : float
        Largest median brightness of the hole (negative: darker than the
        background).
    fade : float
        Largest median brightness two to three band widths out.
    band : int
        Width (px) of the ring measured round each hole.
    min_area, max_area : int
        Hole size (px) of a rounded cell's centre at this magnification.
    apart : float or None
        Brightness (noise sd) on the line to a marker nearer than `spacing`
        that makes the candidate a cell of its own anyway; None: never.

    Returns
    -------
    ndarray of float64, shape (K, 2)
        (row, col) of the rounded cells found; K may be 0.

    Raises
    ------
    InputError
        For a bad image or parameter.
    """
    if not (np.isfinite(spacing) and spacing >= 0):
        raise InputError(f"rounded_cells: need a finite spacing >= 0 (px), got {spacing}.")
    if apart is not None and not np.isfinite(apart):
        raise InputError(f"rounded_cells: apart must be a finite brightness (noise sd) or None, "
                         f"got {apart}.")
    # _rounded_search checks the image (2-D, finite) before its shape is used here
    areas, level = _rounded_search(image, bright, ring, centre, fade, band, min_area, max_area)
    given = (check_markers(markers, np.shape(image)) if markers is not None and np.size(markers)
             else np.zeros((0, 2)))
    found: list[tuple[float, float]] = []
    for centroid, box, area in areas:
        near = np.vstack([given, np.array(found).reshape(-1, 2)])
        close = near[np.hypot(*(near - centroid).T) < spacing]
        if all(apart is not None and _ringed_off(level, centroid, point, box, area, apart)
               for point in close):
            found.append(centroid)
    return np.array(found, float).reshape(-1, 2)


def _ringed_off(level: np.ndarray, centroid, point: np.ndarray, box, area: np.ndarray,
                apart: float) -> bool:
    """Whether `point` lies outside a rounded cell's `area` with a ring brighter than `apart`
    on the straight line from the cell's `centroid` to it."""
    inside = np.round(point).astype(int) - [box[0].start, box[1].start]
    if (0 <= inside[0] < area.shape[0] and 0 <= inside[1] < area.shape[1]
            and area[inside[0], inside[1]]):
        return False
    n = int(np.ceil(2 * np.hypot(*(point - np.asarray(centroid))))) + 2
    line = np.asarray(centroid)[:, None] + np.linspace(0, 1, n)[None] * (point - centroid)[:, None]
    return float(ndi.map_coordinates(level, line, order=1).max()) > apart
