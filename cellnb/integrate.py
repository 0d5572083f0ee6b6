"""Step 5: from per-patch outputs to one label image of the whole field.

Each pixel goes to the patch with the highest probability there (paper,
Methods); ties go to the patch listed first (the lower marker index).
Labels follow marker order: marker k (0-based) is label k + 1, so label ids
match the marker CSV. What is background has two answers:

* ``mask`` given (the default of :func:`cellnb.pipeline.segment`): the
  foreground mask decides what is a cell at all; the network decides which
  cell. Its confident output, the paper's foreground (probability >=
  `threshold`), gives each cell a *core*; every marker seeds its own cell
  too, so no cell vanishes where the network is unsure. The rest of the
  mask is flooded from the cores by a watershed over a *border landscape*
  (:func:`border_landscape`): borders between cells settle on image ridges
  (the bright line between touching cells in phase contrast, edges
  otherwise) where the network gave no answer. A mask piece that holds no
  core stays background; in phase contrast so does the floor of a basin of
  the landscape that holds no core and is walled in by a high ridge (a dark
  object inside its own bright halo: a cell without a marker, debris;
  :func:`enclosed_basins`), rather than being handed to the cell next to
  it. *Unless* the network already answers for most of
  the mask (:func:`mask_coverage` >= :data:`FLOOD_BELOW`): then its "no"
  is trusted too, and the paper's rule holds inside the mask (mask pixels
  where every patch is below `threshold` are background).
* no mask: the paper's rule, background where every patch is below
  `threshold` (0.5).

Why not the paper's rule with cellnb's mask? On real phase-contrast fields
the network is confident only in a compact core of each long, thin cell,
and the paper's rule keeps those cores alone. On the 8 Usiigaci fields
(cellnb's mask, beta = 3, 300 steps): the paper's rule gives mIOU 0.394 /
AP@0.5 0.220; every mask pixel to its most probable patch 0.578 / 0.599;
cores flooded over the landscape 0.611 / 0.703, against 0.575 / 0.589 for
the nearest-marker split of the same mask and 0.521 / 0.411 for the same
watershed seeded by the markers alone (so the cores, i.e. the network,
bring the gain).

Why then the paper's rule when the network covers the mask? On the demo's
crowded synthetic fields the network is confident over ~90 % of the mask,
and the mask pixels it rejects are mostly the mask's own excess (blur
around the cells): flooding hands them to cells anyway. field_01, three
channels, one trained model: flooded 0.666 / 0.880, paper's rule inside the
mask 0.684 / 0.933. The rule is read from the network's output on each
field (:func:`mask_coverage`), never from what the user says the field is.

Patches cut at a working scale below 1 (large cells, see
:func:`cellnb.patches.patch_geometry`) bring their *probabilities* to the
original resolution (bilinear, :func:`best_patch`) before each pixel takes
the highest, so borders between cells are drawn at full resolution. Taking
the labels on the working grid and enlarging them drew staircase borders
in blocks of 1 / scale (2-4) pixels, with square fragments between cells.

Where two cells' cores touch, the network's split is only where two smooth
outputs cross; the image knows better (in phase contrast a bright line
runs between touching cells). With a phase-contrast landscape
(:func:`border_band`), the last :data:`BORDER_BAND` = 2.5 px (working
scale) of each core next to another cell's core are flooded again with the
rest, so the split settles on the landscape's ridge near where the network
put it. Measured on the 12 Usiigaci fields with one click per cell (the
same trained outputs, ``bench/real_data.py``'s 300-step models), mIOU /
AP@0.5 / AP@0.5 on touching cells: 0.613 / 0.668 / 0.597 before; the band
over the previous relief (sigma 1.5) 0.618 / 0.684 / 0.635; with
:data:`PHASE_RIDGE_SIGMA` = 2.5 0.620 / 0.703 / 0.650 (``bench/real_data.py``
with this release: 0.620 / 0.703 / 0.652; set31 0.694 -> 0.848, set34 0.656
-> 0.738; set20 0.427 -> 0.409). Bands of 2, 3, 4 and 5 working px over the
sigma-1.5 relief: 0.616-0.618 / 0.675-0.684 (touching cells 0.624-0.644).
Full-resolution probabilities alone move nothing in these figures (0.613 /
0.666): they only redraw the borders.

Markers found in a phase-contrast image (no clicks) miss cells, and the
flood then hands a missed cell to the marked cell beside it: the label is
shaped like two cells. :func:`split_lobes` cuts such a label in two on the
landscape's line between its two wide parts (:func:`cellnb.pipeline.segment`
does it only for markers it found in the image: with one click per cell a
two-lobed label is one cell).

Light clean-up (on by default, switchable): a cell keeps only the connected
piece that holds its marker (or its largest piece if the marker pixel went
to a neighbour); stray fragments become background (with a mask: are
flooded again); background pin-holes fully enclosed by one cell are given
to that cell.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .io import InputError, check_labels
from .model import predict_batch
from .patches import PatchSet

__all__ = ["predict_patches", "best_patch", "integrate", "border_landscape", "fill_mask",
           "flood_options", "enclosed_basins", "split_lobes", "LOBE_DEPTH", "LOBE_AREA",
           "join_cut_cells", "JOIN_HALO", "JOIN_INSIDE", "JOIN_SMOOTH",
           "keep_marker_component", "cell_table", "confident_share", "collapse_message",
           "COLLAPSE_SHARE", "mask_coverage", "FLOOD_BELOW", "BORDER_BAND",
           "border_band", "PHASE_RIDGE_SIGMA"]


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
    from .patches import augment_np, invert_np
    if model.input_shape[-1] != patches.x.shape[-1]:
        raise InputError(f"the model takes {model.input_shape[-1]} input channels, the patches "
                         f"have {patches.x.shape[-1]}: use the channels it was trained on.")
    out = np.empty(patches.x.shape[:3], np.float32)
    for s in range(0, len(patches), batch_size):
        x = patches.x[s:s + batch_size]
        acc = np.zeros(x.shape[:3], np.float64)
        for t in (range(8) if tta else [0]):
            codes = np.full(len(x), t)
            # predict_on_batch: compiled once per batch shape, on any Keras backend
            z = predict_batch(model, augment_np(x, codes)).astype(np.float64)[..., 0]
            acc += 1.0 / (1.0 + np.exp(-invert_np(z, codes)))
        out[s:s + batch_size] = acc / (8 if tta else 1)
    return out


# A trained model gives nearly every marker a confident core in its own patch (measured:
# 0.93-1.00 of the markers on the demo crops and the 12 real phase-contrast fields); a
# collapsed training gives none (0.00 on a crop of demo field_03 at seed 0 without the
# learning-rate warm-up, and on Usiigaci set3 with it). Half is far from both.
COLLAPSE_SHARE = 0.5


#: Below this share of the mask covered by confident output, the cores are
#: flooded through the mask; at or above it the paper's rule holds inside
#: the mask. Measured coverage at 300 steps (`bench/real_data.py`,
#: `bench/table1.py`, column `cover`, beside both rules' scores): the 12 real
#: phase-contrast fields 0.18-0.63 and the demo's one-channel rows ~0.70, where
#: flooding wins; the demo's three-channel rows ~0.9, where the paper's rule
#: inside the mask wins.
FLOOD_BELOW = 0.8

#: Where two cells' cores touch, this many px (at the working scale) of each
#: core next to the other are flooded again over the border landscape, so the
#: split follows the image's own line between the cells rather than where
#: two smooth outputs happen to cross (:func:`integrate`, `band`;
#: :func:`border_band` says for which images).
BORDER_BAND = 2.5

#: Gaussian sigma (px, full resolution) of the phase-contrast border landscape. The halo
#: line between touching cells is broken by texture and nucleoli; smoothing it more keeps
#: the flood from leaking through the gaps. Measured on the 12 Usiigaci fields with one click
#: per cell (same trained outputs, :data:`BORDER_BAND` = 2.5), mIOU / AP@0.5 / AP@0.5 on
#: touching cells: sigma 1.0 0.615 / 0.670 / 0.615, 1.5 0.618 / 0.684 / 0.635, 2.0 0.619 /
#: 0.695 / 0.648, 2.5 0.620 / 0.703 / 0.650, 3.0 0.620 / 0.700 / 0.658, 4.0 0.619 / 0.690 /
#: 0.658, 6.0 0.615 / 0.663 / 0.637; a sigma scaled with the working scale (1 / scale px)
#: 0.620 / 0.696 / 0.640; a Sato ridge filter added 0.612 / 0.656 / 0.593. With markers
#: found in the image, 1.5 -> 2.5: 0.490 / 0.408 / 0.350 -> 0.494 / 0.419 / 0.369.
PHASE_RIDGE_SIGMA = 2.5

#: Modalities whose border landscape marks the line between touching cells
#: well enough to redraw the network's split on it (:func:`border_band`).
BAND_MODALITIES = ("phase",)

#: A basin of the border landscape inside the mask that holds no core, walled in by a ridge
#: at least this high above its floor (landscape units: the smoothed image's standard
#: deviations) is another object (an unclicked cell, debris), and stays background instead of
#: being flooded into a neighbour (:func:`integrate`, `enclosed`; :func:`flood_options`).
#: Measured on the 12 Usiigaci fields, the same trained outputs (seed 0), with one click per
#: annotated cell, mIOU / AP@0.5: 0.633 / 0.728 before; depth 1.0 0.633-0.636 / 0.736-0.744
#: (some fields down), 1.5 0.635-0.636 / 0.747-0.750, 2.0 0.636 / 0.745-0.746 (no field down
#: at 1.5 and 2.0; up most where unclicked cells and debris touch clicked ones: set30 0.615
#: -> 0.680, set34 0.797 -> 0.828, set33 0.545 -> 0.594); with the markers found in the image
#: (previous release's outputs) 0.545 / 0.456 -> 0.541-0.544 / 0.453-0.460: level.
ENCLOSED_DEPTH = 1.5
#: ... and at least this large (px at the working scale, ``patches.scale``; 8-24 measured alike).
ENCLOSED_AREA = 16.0


def mask_coverage(probs: np.ndarray, patches: PatchSet, mask, threshold: float = 0.5) -> float:
    """Share of the foreground mask where some patch is confident (probability >= `threshold`).

    Parameters
    ----------
    probs : ndarray, shape (N, k, k)
        :func:`predict_patches` output.
    patches : PatchSet
    mask : ndarray of bool, shape (H, W) of the original image
    threshold : float
        The network's foreground (paper: 0.5).

    Returns
    -------
    float
        In [0, 1]; 0 for an empty mask.
    """
    best, _ = best_patch(probs, patches)
    mask = np.asarray(mask, bool)
    if best.shape != mask.shape:
        raise InputError(f"mask_coverage: mask shape {mask.shape} does not match the image "
                         f"{best.shape}.")
    return _share(best >= threshold, mask)


def _share(sure: np.ndarray, mask: np.ndarray) -> float:
    """Share of the mask's pixels that are `sure`; 0 for an empty mask."""
    n = int(mask.sum())
    return float(sure[mask].sum() / n) if n else 0.0


def confident_share(probs: np.ndarray, patches: PatchSet, threshold: float = 0.5,
                    radius: int = 2) -> float:
    """Share of markers whose own patch is confident near the marker: the training's health.

    A trained network is sure of the cell under its marker: its own patch's
    probability reaches `threshold` within `radius` px of the patch centre.
    When training has collapsed (every output low, or high only away from
    the marker), almost no marker passes, while integration inside the mask
    would still hand every mask pixel to some cell and hide it.

    Parameters
    ----------
    probs : ndarray, shape (N, k, k)
        :func:`predict_patches` output.
    patches : PatchSet
    threshold : float
        The network's foreground (paper: 0.5).
    radius : int
        Half-side, in px at the working scale, of the square around the marker.

    Returns
    -------
    float
        In [0, 1]; 0 for no patches.
    """
    probs = np.asarray(probs)
    if len(probs) == 0:
        return 0.0
    c = patches.size // 2
    core = probs[:, max(c - radius, 0):c + radius + 1, max(c - radius, 0):c + radius + 1]
    return float((core.max(axis=(1, 2)) >= threshold).mean())


def collapse_message(share: float) -> str | None:
    """One line for the user when `share` (:func:`confident_share`) says training collapsed.

    Returns
    -------
    str or None
        None for a healthy training (share >= :data:`COLLAPSE_SHARE`).
    """
    if share >= COLLAPSE_SHARE:
        return None
    return (f"the network is not confident: only {share:.0%} of the markers have a "
            f"confident core (p >= 0.5) in their own patch (training collapsed or stopped too "
            f"early), so the cells come from the mask alone; train again with more steps or "
            f"another seed, and check the markers and the mask")


def keep_marker_component(labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Keep, for each label, only the connected piece holding its marker, holes filled.

    Background holes entirely enclosed by one cell become part of it, once
    every label's stray pieces are gone (a stray piece of another label inside
    a cell leaves no hole); pixels of other cells are never taken.

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
    return _fill_label_holes(out)


def _fill_label_holes(labels: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Give each label the background holes it alone encloses, in place.

    A background pixel that one label surrounds on every side (no other
    label, no background path to the outside of the label's own box) becomes
    that label.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Changed in place.
    where : ndarray of bool, shape (H, W), optional
        Only these background pixels may be filled (default: every one).

    Returns
    -------
    ndarray of int
        `labels`.
    """
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        hole = ndi.binary_fill_holes(labels[sl] == k) & (labels[sl] == 0)
        if where is not None:
            hole &= where[sl]
        labels[sl][hole] = k
    return labels


def _argmax(probs: np.ndarray, patches: PatchSet) -> tuple[np.ndarray, np.ndarray]:
    """Highest probability and its patch (label k + 1 = patch k) on the patches' grid."""
    h, w = patches.shape
    k, pad = patches.size, patches.pad
    best = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    lab = np.zeros(best.shape, np.int32)
    for i, (r, c) in enumerate(patches.corners):
        sub_b = best[r:r + k, c:c + k]
        win = probs[i] > sub_b
        sub_b[win] = probs[i][win]
        lab[r:r + k, c:c + k][win] = i + 1
    return best[pad:pad + h, pad:pad + w], lab[pad:pad + h, pad:pad + w]


def _linear_weights(start: int, k: int, factor: float, n: int) -> tuple[int, np.ndarray]:
    """Linear-interpolation weights from a patch's k working-scale pixels to full resolution.

    Along one axis: the patch covers working-scale pixels ``start .. start + k - 1``
    (unpadded; may lie outside the image). Full-resolution pixel ``Y`` sits at
    working-scale position ``(Y + 0.5) * factor - 0.5`` (pixel centres kept, as
    :func:`cellnb.patches.to_scale`); the patch answers for the ``Y`` within
    half a working pixel of its pixels, clipped to ``0 .. n - 1``.

    Returns
    -------
    first : int
        The first full-resolution pixel.
    weights : ndarray of float32, shape (m, k)
        Row ``j`` interpolates full-resolution pixel ``first + j``.
    """
    first = max(int(np.ceil(start / factor - 0.5)), 0)
    stop = min(int(np.ceil((start + k) / factor - 0.5)), n)
    y = np.arange(first, stop)
    t = np.clip((y + 0.5) * factor - 0.5 - start, 0, k - 1)
    i0 = np.minimum(np.floor(t).astype(int), k - 2) if k > 1 else np.zeros(len(y), int)
    w = (t - i0).astype(np.float32)
    a = np.zeros((len(y), k), np.float32)
    a[np.arange(len(y)), i0] = 1 - w
    if k > 1:
        a[np.arange(len(y)), i0 + 1] += w
    return first, a


def best_patch(probs: np.ndarray, patches: PatchSet) -> tuple[np.ndarray, np.ndarray]:
    """Highest probability and its patch at every pixel of the original image.

    At a working scale below 1 the *probabilities* are brought to full
    resolution (bilinear, per patch) before the highest is taken, so that
    the border between two cells is drawn at full resolution: labels taken
    on the working grid and enlarged come out in blocks of 1 / scale pixels
    (staircase borders, square fragments between cells).

    Parameters
    ----------
    probs : ndarray, shape (N, k, k)
        :func:`predict_patches` output.
    patches : PatchSet

    Returns
    -------
    best : ndarray of float32, shape (H, W) of the original image
        0 where no patch reaches.
    label : ndarray of int32, shape (H, W)
        Patch k (0-based) is label k + 1; 0 where no patch reaches.
    """
    probs = np.asarray(probs, np.float32)
    full = tuple(patches.full_shape or patches.shape)
    if tuple(patches.shape) == full:
        return _argmax(probs, patches)
    (h, w), (hh, ww) = patches.shape, full
    fy, fx = h / hh, w / ww
    k, pad = patches.size, patches.pad
    best = np.zeros(full, np.float32)
    lab = np.zeros(full, np.int32)
    for i, (r, c) in enumerate(patches.corners):
        r0, ay = _linear_weights(int(r) - pad, k, fy, hh)
        c0, ax = _linear_weights(int(c) - pad, k, fx, ww)
        if not (len(ay) and len(ax)):
            continue
        p = ay @ probs[i] @ ax.T
        sub_b = best[r0:r0 + len(ay), c0:c0 + len(ax)]
        win = p > sub_b
        sub_b[win] = p[win]
        lab[r0:r0 + len(ay), c0:c0 + len(ax)][win] = i + 1
    return best, lab


def fill_mask(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every unlabelled mask pixel the label of the nearest labelled pixel of its piece.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = not yet labelled.
    mask : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of int32
        Labels outside the mask are removed; mask pieces holding no label stay 0.
    """
    from skimage.segmentation import watershed
    lab = np.where(mask, labels, 0).astype(np.int32)
    if not lab.any():
        return lab
    # flooding the distance to the labelled pixels = nearest label, along the mask only
    return watershed(ndi.distance_transform_edt(lab == 0), lab, mask=mask).astype(np.int32)


def border_landscape(images, modalities) -> np.ndarray:
    """The relief whose ridges separate touching cells, for flooding from the cores.

    Phase contrast: the intensity smoothed by :data:`PHASE_RIDGE_SIGMA`
    (touching cells are parted by a bright halo line). Other modalities: the
    gradient magnitude (cells are parted by an edge). Several channels are
    summed, each scaled to unit standard deviation.

    Parameters
    ----------
    images : ndarray, shape (H, W) or (H, W, C)
        Cell channels (raw or normalised).
    modalities : str or sequence of str
        One of :data:`cellnb.mask.MODALITIES` per channel.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    from skimage.filters import sobel
    from .io import check_image, normalize
    img = check_image(images, name="image")
    planes = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[-1])]
    mods = [modalities] * len(planes) if isinstance(modalities, str) else list(modalities)
    if len(mods) != len(planes):
        raise InputError(f"border_landscape: {len(planes)} channel(s) but {len(mods)} "
                         "modalities.")
    out = np.zeros(planes[0].shape, np.float64)
    for plane, mod in zip(planes, mods):
        x = normalize(plane).astype(np.float64)
        r = ndi.gaussian_filter(x, PHASE_RIDGE_SIGMA) if mod == "phase" else \
            sobel(ndi.gaussian_filter(x, 1.0))
        out += r / (r.std() + 1e-12)
    return out.astype(np.float32)


def _free_contacts(cores: np.ndarray, centres: np.ndarray, band: float) -> np.ndarray:
    """Cores less the pixels within `band` px of another cell's core (markers kept)."""
    from skimage.morphology import disk
    fp = disk(int(np.ceil(band)))
    big = np.iinfo(np.int32).max
    hi = ndi.maximum_filter(cores, footprint=fp)
    lo = ndi.minimum_filter(np.where(cores > 0, cores, big), footprint=fp)
    out = cores.copy()
    out[(cores > 0) & ((hi != cores) | (lo != cores))] = 0
    r, c = centres[:, 0], centres[:, 1]
    own = cores[r, c] == np.arange(1, len(centres) + 1)
    out[r[own], c[own]] = cores[r[own], c[own]]
    return out


def border_band(modalities) -> float:
    """The `band` of :func:`integrate` for a landscape of these channels.

    :data:`BORDER_BAND` when every channel is in :data:`BAND_MODALITIES`
    (phase contrast: touching cells are parted by a bright halo line, and
    the landscape is that line), else 0. Measured on the demo fields: the
    bright-field rows lost (mIOU -0.005 to -0.009, AP@0.5 up to -0.04 on the
    same trained outputs: texture draws no line between cells); the
    fluorescence rows gained on the same outputs (mean mIOU / AP@0.5 0.667 /
    0.839 -> 0.670 / 0.847), but borders on the edges settle sooner, the
    stable-labels stop came earlier (field_02 at 100 steps instead of 225),
    and in ``bench/table1.py`` the four rows moved by -0.031 to +0.030 AP@0.5:
    no clear gain, so fluorescence keeps the network's split. DIC was not
    measured.

    Parameters
    ----------
    modalities : str or sequence of str
        One of :data:`cellnb.mask.MODALITIES` per landscape channel.

    Returns
    -------
    float
        Px at the working scale.
    """
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    return BORDER_BAND if mods and all(m in BAND_MODALITIES for m in mods) else 0.0


def flood_options(modalities) -> dict:
    """The flood's image-specific settings of :func:`integrate` for these channels.

    Parameters
    ----------
    modalities : str or sequence of str
        As :func:`border_band` takes them.

    Returns
    -------
    dict
        ``band`` (:func:`border_band`) and ``enclosed``
        (:data:`ENCLOSED_DEPTH` where the landscape is the phase-contrast
        halo, i.e. where `band` is on; 0 elsewhere: not measured there).
    """
    band = border_band(modalities)
    return {"band": band, "enclosed": ENCLOSED_DEPTH if band > 0 else 0.0}


def _one_shape(where: str, **arrays: np.ndarray) -> None:
    """Raise :class:`InputError` unless the named arrays are 2-D and of one shape."""
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        named = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
        raise InputError(f"{where}: {named} must be one 2-D shape.")


def enclosed_basins(landscape, seeds, mask, depth: float, min_area: float) -> np.ndarray:
    """Parts of the mask walled off from every seed by a landscape ridge.

    A pixel's *spill level* is the lowest level a flood from the seeds must
    rise to before it reaches the pixel without leaving the mask (morphological
    reconstruction by erosion). Where the spill level is more than `depth`
    above the pixel itself, the pixel lies at the bottom of a basin that
    holds no seed: with the phase-contrast landscape, a dark object ringed by
    its own bright halo. Those bottoms, in connected pieces of at least
    `min_area` px, are returned.

    Parameters
    ----------
    landscape : ndarray of float, shape (H, W)
        :func:`border_landscape`.
    seeds : ndarray of bool, shape (H, W)
        Where the flood starts (the cells' cores).
    mask : ndarray of bool, shape (H, W)
        Foreground mask: floods stay inside it.
    depth : float
        Least height of the wall above the basin's floor, landscape units.
    min_area : float
        Smallest piece, px.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    from skimage.morphology import reconstruction
    land = np.asarray(landscape, np.float64)
    mask, seeds = np.asarray(mask, bool), np.asarray(seeds, bool)
    _one_shape("enclosed_basins", landscape=land, seeds=seeds, mask=mask)
    top = float(land.max()) + 1.0
    relief = np.where(mask, land, top)          # a flood cannot leave the mask
    level = reconstruction(np.where(seeds & mask, relief, top), relief, method="erosion")
    pieces, _ = ndi.label(mask & (level - relief > depth))
    big = np.bincount(pieces.ravel()) >= min_area
    big[0] = False
    return big[pieces]


#: :func:`split_lobes`: a lobe is a maximum of a label's distance to its own border that
#: rises at least this share of the label's deepest point above the saddle to the next one...
LOBE_DEPTH = 0.25
#: ... and becomes a cell of its own when both it and the rest hold at least this share of
#: the field's median cell area.
LOBE_AREA = 0.5


def split_lobes(labels, landscape, markers, depth: float = LOBE_DEPTH,
                min_area: float = LOBE_AREA) -> tuple[np.ndarray, np.ndarray]:
    """Split off the lobes of a label that holds a second, unmarked cell.

    Markers found in the image miss cells; the flood through the mask then
    hands a missed cell to the marked cell beside it, and the pair becomes
    one label shaped like two cells (two wide parts joined by a narrower
    neck). Such a label is cut in two: each maximum of its distance
    transform that rises at least ``depth`` times the label's deepest point
    above the saddle towards the others (h-maxima) seeds a watershed of
    the label over `landscape`, so the cut follows the image's own line
    between the cells; each piece of at least ``min_area`` times the
    field's median label area, other than the one holding the label's
    marker, becomes a new label, whose marker is its deepest point. Smaller
    pieces stay with the label.

    Use it only where markers may miss cells: with one click per cell, a
    two-lobed label is one cell with a wide lamella (measured below: every
    split was wrong).

    Measured on the 12 Usiigaci NIH/3T3 fields (``../shared/data``, the
    whole no-click bench, seed 0, the previous release's markers and
    trained networks, so the split is the only change), mIOU / AP@0.5 /
    touching AP@0.5 0.545 / 0.483 / 0.378 -> 0.550 / 0.491 / 0.388: 12
    labels split, 8 into
    two annotated cells and 4 into one; AP@0.5 up on set5, set15, set20,
    set30 and set33 (+0.004 to +0.033; set30 and set33 are the sparse
    thin-cell fields), down on set1 (-0.008) and set31 (-0.012). Every
    setting of `depth` 0.15-0.35 and `min_area` 0.4-0.7 gained (+0.003 to
    +0.012 AP@0.5; +0.000 to +0.009 on the same markers' networks trained
    the whole 300 steps). With one click per cell: 6 labels split, all six
    wrong (0.636 / 0.746 -> 0.637 / 0.746).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Label k + 1 belongs to ``markers[k]`` (:func:`integrate`).
    landscape : ndarray of float, shape (H, W)
        :func:`border_landscape` of the same image.
    markers : ndarray, shape (N, 2)
        The labels' markers (row, col).
    depth : float in (0, 1)
    min_area : float > 0

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        The new cells are labels N + 1, N + 2, ...
    added : ndarray of float64, shape (K, 2)
        Their markers, in label order.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed
    lab = np.asarray(labels)
    land = np.asarray(landscape, np.float64)
    mk = np.asarray(markers, np.float64).reshape(-1, 2)
    _one_shape("split_lobes", labels=lab, landscape=land)
    if lab.max(initial=0) > len(mk):
        raise InputError(f"split_lobes: label {int(lab.max())} but only {len(mk)} markers; "
                         "pass the markers the labels were made from.")
    if not 0 < depth < 1:
        raise InputError(f"split_lobes: depth must be in (0, 1), got {depth}.")
    if not (np.isfinite(min_area) and min_area > 0):
        raise InputError(f"split_lobes: min_area must be > 0 (a share of the median cell), "
                         f"got {min_area}.")
    out = lab.astype(np.int32, copy=True)
    areas = np.bincount(out.ravel())[1:]
    if not (areas > 0).any():
        return out, np.zeros((0, 2))
    least = min_area * float(np.median(areas[areas > 0]))
    added, nxt = [], len(mk) + 1
    for k, sl in enumerate(ndi.find_objects(out), start=1):    # the boxes before any split
        if sl is None or areas[k - 1] < 2 * least:
            continue
        # one px of background round the label, so its border is never the box edge
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        cell = out[sl] == k
        dist = ndi.distance_transform_edt(cell)
        # distances repeat (square roots of integers): two equal peaks would both pass
        # h_maxima whatever the saddle between them, so ties are broken by position
        tied = dist + 1e-9 * np.arange(dist.size).reshape(dist.shape)
        lobes, n = ndi.label(h_maxima(tied, depth * dist.max()) & cell)
        if n < 2:
            continue
        parts = watershed(land[sl], lobes, mask=cell)
        size = np.bincount(parts.ravel(), minlength=n + 1)[1:]
        if (size >= least).sum() < 2:
            continue
        r, c = np.round(mk[k - 1]).astype(int) - [sl[0].start, sl[1].start]
        own = parts[r, c] if 0 <= r < cell.shape[0] and 0 <= c < cell.shape[1] else 0
        own = own or 1 + int(np.argmax(size))
        for j in np.flatnonzero(size >= least) + 1:
            if j == own:
                continue
            piece = parts == j
            out[sl][piece] = nxt
            deep = np.unravel_index(np.argmax(np.where(piece, dist, -1)), piece.shape)
            added.append((deep[0] + sl[0].start, deep[1] + sl[1].start))
            nxt += 1
    return out, np.array(added, np.float64).reshape(-1, 2)


#: :func:`join_cut_cells`: two neighbouring labels are one cell when no pixel on the straight
#: line between their markers is brighter than the local background by this many noise sd
#: (the sharp halo that runs between two cells)...
JOIN_HALO = 16.0
#: ... and, smoothed over :data:`JOIN_SMOOTH` px, the line stays darker than this (noise sd;
#: 0 = the background level; below it, a broad faint halo).
JOIN_INSIDE = -2.0
#: Smoothing (px) of the darkness along the line for :data:`JOIN_INSIDE`.
JOIN_SMOOTH = 6.0


def join_cut_cells(labels, darkness, markers, halo: float = JOIN_HALO,
                   inside: float = JOIN_INSIDE, upto: int | None = None
                   ) -> tuple[np.ndarray, int]:
    """Join neighbouring labels that are two pieces of one cell.

    Markers found in a phase-contrast image put two markers in some cells
    (two dark bodies: the nucleus and a thick part of the cytoplasm, or a
    detection beside a body), and each marker becomes a label: the cell is
    cut in two, and neither piece matches it. In phase contrast each cell's
    border is bright (the halo), so between two touching *cells* the image
    brightens, sharply or over a broad band; inside one cell it does not.
    So two labels that touch are joined when the straight line between
    their markers runs inside the two labels and crosses no halo: no pixel
    brighter than the local background by more than `halo` noise standard
    deviations and, smoothed over :data:`JOIN_SMOOTH` px, nowhere lighter
    than `inside` (a broad, faint halo). Joined groups take the lowest
    label of the group; the others are left empty. A label whose marker
    lies outside it (or that has none) is measured from its deepest point.

    Use it only where markers may fall twice into one cell (found in the
    image): with one click per cell, two labels are two cells.

    Measured on the 12 Usiigaci NIH/3T3 fields (``../shared/data``; the
    no-click bench, ``bench/real_data.py --markers image``, seed 0): AP@0.5
    0.507 -> 0.538, mIOU 0.569 -> 0.572, 20 labels joined, up on 6 fields
    (set3 0.450 -> 0.617, set5 0.655 -> 0.755, set1 0.632 -> 0.695) and
    down on none. Without the condition that the line stay inside the two
    labels, 23 joins and 0.532 (three more pairs of cells joined). Nearby
    settings, on that rule without it: `halo` 12 / 16 / 20 with `inside` -2
    gave 0.527 / 0.536 / 0.538 on an earlier run, `inside` 0 0.524-0.529,
    `inside` -4 0.518-0.522; with it, `halo` 20 0.540, `inside` -3 0.534.
    Joining along any path through the two labels instead of the straight
    line joined 50 pairs of cells against 27 pieces of one cell (AP@0.5
    0.49 on the first 4 fields, the straight line 0.65).
    With one click per cell the join (without the condition) joined 8
    pairs of cells, all wrong (0.761 -> 0.738).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background; label k + 1 belongs to ``markers[k]``.
    darkness : ndarray of float, shape (H, W)
        :func:`cellnb.mask.phase_darkness` of the phase-contrast image
        (noise sd; positive darker than the background, the halo negative).
    markers : ndarray, shape (N, 2)
        The labels' markers (row, col); labels beyond N use their deepest point.
    halo : float
        Brightest pixel (noise sd above the background) a line inside one cell may cross.
    inside : float
        Lightest smoothed darkness (noise sd) a line inside one cell may reach.
    upto : int, optional
        Join only labels 1..`upto`: the ones above are cells that
        :func:`split_lobes` has just cut off, and the two repairs must not
        undo each other. Default: every label.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
    joined : int
        How many labels were joined into another.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    lab = np.asarray(labels)
    dark = np.asarray(darkness, np.float64)
    mk = np.asarray(markers, np.float64).reshape(-1, 2)
    _one_shape("join_cut_cells", labels=lab, darkness=dark)
    if not (np.isfinite(halo) and np.isfinite(inside)):
        raise InputError(f"join_cut_cells: halo and inside must be finite numbers (noise sd), "
                         f"got halo={halo}, inside={inside}.")
    out = lab.astype(np.int32, copy=True)
    n = int(out.max(initial=0))
    # the labels that touch (4-neighbours), each pair once
    pairs = np.concatenate([np.stack([out[:, :-1].ravel(), out[:, 1:].ravel()], 1),
                            np.stack([out[:-1].ravel(), out[1:].ravel()], 1)])
    top = n if upto is None else int(upto)
    pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0) & (pairs[:, 0] != pairs[:, 1])
                  & (pairs[:, 0] <= top) & (pairs[:, 1] <= top)]
    if not len(pairs):
        return out, 0
    pairs = np.unique(np.sort(pairs, 1), axis=0)
    points = np.zeros((n + 1, 2))
    for k, sl in enumerate(ndi.find_objects(out), start=1):
        if sl is None:
            continue
        r, c = np.round(mk[k - 1]).astype(int) if k <= len(mk) else (-1, -1)
        if 0 <= r < out.shape[0] and 0 <= c < out.shape[1] and out[r, c] == k:
            points[k] = mk[k - 1]
            continue
        cell = np.pad(out[sl] == k, 1)
        deep = np.unravel_index(np.argmax(ndi.distance_transform_edt(cell)), cell.shape)
        points[k] = deep[0] - 1 + sl[0].start, deep[1] - 1 + sl[1].start
    bright = -ndi.gaussian_filter(dark, 1.0)
    body = ndi.gaussian_filter(dark, JOIN_SMOOTH)
    keep = []
    for a, b in pairs:
        step = points[b] - points[a]
        t = np.linspace(0, 1, max(int(np.hypot(*step)), 2) + 1)[1:-1]
        line = (points[a][None] + t[:, None] * step[None]).T
        # the line must run inside the two labels: one cell's two pieces are seen from each
        # other, while a line leaving them passes between two cells at their ends
        if (np.isin(out[tuple(np.round(line).astype(int))], (a, b)).all()
                and ndi.map_coordinates(bright, line, order=1).max() < halo
                and ndi.map_coordinates(body, line, order=1).min() > inside):
            keep.append((a, b))
    if not keep:
        return out, 0
    a, b = np.array(keep).T
    _, group = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n + 1,) * 2),
                                    directed=False)
    # each group's lowest label: the minimum over its members
    first = np.full(group.max() + 1, n + 1)
    np.minimum.at(first, group, np.arange(n + 1))
    new = first[group].astype(np.int32)
    new[0] = 0
    joined = int((new[1:] != np.arange(1, n + 1))[np.bincount(out.ravel(), minlength=n + 1)[1:]
                                                    > 0].sum())
    return new[out], joined


def integrate(probs: np.ndarray, patches: PatchSet, threshold: float = 0.5,
              cleanup: bool = True, mask=None, landscape=None,
              flood: bool | None = None, band: float = 0.0,
              enclosed: float = 0.0) -> np.ndarray:
    """Whole-field label image from patch probabilities.

    Parameters
    ----------
    probs : ndarray, shape (N, k, k)
        :func:`predict_patches` output, same order as the patches/markers.
    patches : PatchSet
    threshold : float
        The network's foreground (paper: 0.5). Without `mask`: background
        where every patch is below it. With `mask`: the cells' cores.
    cleanup : bool
        :func:`keep_marker_component` (on the cores, with `mask`).
    mask : ndarray of bool, shape (H, W), optional
        Foreground mask at the original resolution: background is outside
        it, and the cores are flooded through it (module docstring).
    landscape : ndarray, shape (H, W), optional
        With `mask`: the relief to flood over (:func:`border_landscape`);
        default the distance to the nearest core (:func:`fill_mask`).
    flood : bool, optional
        With `mask`: True floods the cores through the whole mask; False
        keeps the paper's rule inside the mask. Default: chosen from the
        output, flood when :func:`mask_coverage` < :data:`FLOOD_BELOW`.
    band : float
        When flooding over a `landscape`: where two cores touch, the pixels of
        each core within `band` px (at the working scale, ``patches.scale``)
        of the other are flooded again, so the split between touching cells
        settles on the landscape's ridge near where the network put it
        (markers stay seeds). 0 keeps the network's split as it is;
        :func:`border_band` gives what :func:`cellnb.pipeline.segment` uses.
    enclosed : float
        When flooding over a `landscape`: the bottoms of mask basins that hold
        no core, walled in by a ridge at least `enclosed` above their floor
        and at least :data:`ENCLOSED_AREA` working-scale px large, stay
        background (:func:`enclosed_basins`): another object there (a cell
        without a marker, debris) is not handed to a neighbouring cell;
        one that lies inside a single cell stays part of it (no holes). 0
        floods them; :func:`flood_options` gives what
        :func:`cellnb.pipeline.segment` uses.

    Returns
    -------
    labels : ndarray of int32, shape (H, W) of the original image
        0 = background; label k + 1 = marker k.
    """
    probs = np.asarray(probs, np.float32)
    if probs.shape != patches.x.shape[:3]:
        raise InputError(f"integrate: probabilities of shape {probs.shape} do not match "
                         f"{len(patches)} patches of {patches.size}x{patches.size}.")
    if not (0 < threshold < 1):
        raise InputError(f"integrate: threshold must be in (0, 1), got {threshold}.")
    if not (np.isfinite(band) and band >= 0):
        raise InputError(f"integrate: band must be a number of px >= 0, got {band}.")
    if not (np.isfinite(enclosed) and enclosed >= 0):
        raise InputError(f"integrate: enclosed must be a landscape height >= 0 (0 = off), "
                         f"got {enclosed}.")
    full = tuple(patches.full_shape or patches.shape)
    centres = patches.centres if patches.markers is None else \
        np.round(patches.markers).astype(np.int64)
    best, lab = best_patch(probs, patches)
    if mask is None:
        lab[best < threshold] = 0
        return keep_marker_component(lab, centres) if cleanup else lab
    mask = np.asarray(mask, bool)
    if mask.shape != full:
        raise InputError(f"integrate: mask shape {mask.shape} does not match the image {full}.")
    cores = np.where(best >= threshold, lab, 0).astype(np.int32)
    cores[~mask] = 0
    if flood is None:
        flood = _share(cores > 0, mask) < FLOOD_BELOW          # = mask_coverage
    if flood:
        # every marker seeds its own cell, also where the network is unsure everywhere
        seeded = np.zeros(len(centres) + 1, bool)
        seeded[np.unique(cores)] = True
        r, c = centres[:, 0], centres[:, 1]
        free = ~seeded[1:] & mask[r, c] & (cores[r, c] == 0)
        cores[r[free], c[free]] = np.flatnonzero(free) + 1
    if cleanup:
        cores = keep_marker_component(cores, centres)
        cores[~mask] = 0
    if not flood:
        return cores                    # the paper's rule inside the mask
    if landscape is None:
        return fill_mask(cores, mask)
    landscape = np.asarray(landscape)
    if landscape.shape != full:
        raise InputError(f"integrate: landscape shape {landscape.shape} does not match the "
                         f"image {full}.")
    seeds = cores > 0
    if band > 0:
        cores = _free_contacts(cores, centres, band / (patches.scale or 1.0))
    from skimage.segmentation import watershed
    labels = watershed(landscape, cores, mask=mask).astype(np.int32)
    if enclosed > 0:
        walled = enclosed_basins(landscape, seeds, mask, enclosed,
                                 ENCLOSED_AREA / (patches.scale or 1.0) ** 2)
        labels[walled] = 0
        # a basin inside one cell (no other cell, no background round it) stays that cell's,
        # as keep_marker_component fills a core's holes: no hole is punched into a cell
        _fill_label_holes(labels, walled)
    return labels


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
        Cells whose label vanished keep their row with area 0. Labels above
        N (cells split off after training without a marker of their own
        here, :func:`split_lobes`) get rows too, with empty marker columns.
    """
    lab = check_labels(labels)
    m = np.asarray(markers, float).reshape(-1, 2)
    ids = np.arange(1, max(len(m), int(lab.max(initial=0))) + 1)
    area = ndi.sum(np.ones_like(lab), lab, ids) if len(ids) else []
    with np.errstate(invalid="ignore", divide="ignore"):  # cells of area 0: no centroid/mean
        cents = ndi.center_of_mass(np.ones_like(lab), lab, ids) if len(ids) else []
        means = {name: ndi.mean(np.asarray(img, float), lab, ids)
                 for name, img in (images or {}).items()}
    rows = []
    for i, k in enumerate(ids):
        a = int(area[i])
        own = i < len(m)
        row = {"id": int(k), "marker_row": round(m[i, 0], 2) if own else "",
               "marker_col": round(m[i, 1], 2) if own else "", "area": a,
               "centroid_row": round(float(cents[i][0]), 2) if a else "",
               "centroid_col": round(float(cents[i][1]), 2) if a else ""}
        for name, v in means.items():
            row[f"mean_{name}"] = round(float(v[i]), 3) if a else ""
        rows.append(row)
    return rows
