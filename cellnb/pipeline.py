"""The whole method on one field, in one call (paper Fig. 1).

markers -> mask -> patches -> unsupervised training -> integration.
Used by ``python -m cellnb segment``, by ``batch`` and, through the run-folder
cache of :mod:`cellnb.cache`, by the notebooks.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field as dc_field
from typing import Callable, Sequence

import numpy as np

from . import integrate as _integrate
from . import mask as _mask
from . import markers as _markers
from . import patches as _patches
from . import synthetic_nuclei as _nuclei
from . import train as _train
from .io import InputError, check_image, check_markers, normalize
from .mask import modality_of

__all__ = ["SegmentResult", "CollapseWarning", "BACKGROUNDS", "segment", "segment_field", "field_markers",
           "modality_of", "config_channels",
           "field_patches", "field_flood", "apply_model", "repair_found_markers", "join_darkness",
           "train_confident", "StableLabels", "classical_labels", "synthetic_field_markers",
           "compare_marker_sources"]


class CollapseWarning(UserWarning):
    """A trained model gives almost no marker a confident core (:func:`cellnb.integrate.collapse_message`)."""


@dataclass
class SegmentResult:
    """Output of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        0 = background, k + 1 = marker k.
    markers : ndarray, shape (N + K, 2)
        The N markers the network was trained on, then the K markers of the
        cells split off two-lobed labels (`split`; they have no patch).
    mask : ndarray of bool, shape (H, W)
    probs : ndarray of float32, shape (N, k, k)
        Per-patch cell probabilities.
    patches : PatchSet
    training : TrainResult or None
        None when an already-trained model was applied.
    seconds : dict
        Wall time of each step.
    confident : float
        Share of markers with a confident core in their own patch
        (:func:`cellnb.integrate.confident_share`).
    coverage : float or None
        Share of the mask where the network is confident
        (:func:`cellnb.integrate.mask_coverage`); it chose the integration
        rule. None without a mask (``background="threshold"``).
    warning : str or None
        :func:`cellnb.integrate.collapse_message`: set when the training
        collapsed and the labels come from the mask alone.
    split : int
        K, the cells split off labels that held two
        (:func:`cellnb.integrate.split_lobes`; only where markers may miss cells).
    joined : int
        The labels joined into a neighbour as a second piece of one cell
        (:func:`cellnb.integrate.join_cut_cells`; with `split`, on a
        phase-contrast channel); they stay empty.
    """

    labels: np.ndarray
    markers: np.ndarray
    mask: np.ndarray
    probs: np.ndarray
    patches: object
    training: object = None
    seconds: dict = dc_field(default_factory=dict)
    confident: float = 1.0
    warning: str | None = None
    coverage: float | None = None
    split: int = 0
    joined: int = 0

    @property
    def n_cells(self) -> int:
        return int(len(np.unique(self.labels[self.labels > 0])))


def _as_channels(images) -> np.ndarray:
    if isinstance(images, (list, tuple)):
        planes = [check_image(im, name=f"image {i + 1}", allow_channels=False)
                  for i, im in enumerate(images)]
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            raise InputError(f"the images have different shapes {sorted(shapes)}; all channels "
                             "of a field must be the same size.")
        return np.stack(planes, -1)
    img = check_image(images, name="image")
    return img[..., None] if img.ndim == 2 else img


BACKGROUNDS = ("mask", "threshold")


# Peak memory of segment() = BASE + PER_PIXEL * field pixels + PER_BATCH_PIXEL * patch pixels
# of the largest training batch (the UNet's activations), fitted to bench/memory.py
# (README, memory table). Before the patches exist, a batch is bounded by one area of
# 640 x 640 px covered ~4 times over (patches of ~2 cell diameters around every cell).
MEMORY_BASE = 1100 * 2**20
MEMORY_PER_PIXEL = 150
MEMORY_PER_BATCH_PIXEL = 1000
DEFAULT_BATCH_PIXELS = 4 * 640 * 640


def memory_estimate(shape: Sequence[int], channels: int = 1,
                    batch_pixels: int | None = None) -> int:
    """Bytes :func:`segment` is expected to need at its peak.

    Parameters
    ----------
    shape : (int, int)
        Field height and width in pixels.
    channels : int
        Network input image channels (cell channels, plus the nucleus if used).
    batch_pixels : int, optional
        Patch pixels of the largest training batch (patches in one area x
        patch side squared); default a bound for a crowded field.

    Returns
    -------
    int
        Estimated peak resident memory, from the fit in ``bench/memory.py``: the
        frameworks (base), the per-pixel maps of the mask and integration, and
        the network's activations for one area batch, which do not grow with
        the field.
    """
    h, w = (int(v) for v in shape[:2])
    batch = DEFAULT_BATCH_PIXELS if batch_pixels is None else int(batch_pixels)
    batch = min(batch, DEFAULT_BATCH_PIXELS * max(1.0, h * w / 640 ** 2))
    extra = 1 + (channels - 1) / 4
    return int(MEMORY_BASE + extra * (MEMORY_PER_PIXEL * h * w + MEMORY_PER_BATCH_PIXEL * batch))


def check_memory(shape: Sequence[int], channels: int = 1,
                 batch_pixels: int | None = None) -> None:
    """Refuse a field that would not fit in the memory available now, before the work."""
    from .validate import memory_available
    need, avail = memory_estimate(shape, channels, batch_pixels), memory_available()
    if need > avail:
        h, w = shape[:2]
        room = avail - memory_estimate((0, 0), channels, batch_pixels)
        side = int(np.sqrt(max(room, 0) / MEMORY_PER_PIXEL / (1 + (channels - 1) / 4)))
        fix = (f"cut it into fields of at most ~{side}x{side} px (e.g. Field.crop) and "
               "segment them one by one, or free memory" if side >= 256 else
               "free memory, or use a machine with more (the network alone needs about "
               f"{memory_estimate((0, 0), channels, batch_pixels) / 2**30:.1f} GiB)")
        raise InputError(f"a {h}x{w} field needs about {need / 2**30:.1f} GiB at its peak, but "
                         f"{avail / 2**30:.1f} GiB is available; {fix}.")


def segment(images, modalities: Sequence[str] | str | None = None, nucleus=None, markers=None,
            mask=None, use_nucleus: bool = False, patch_size: int | None = None,
            sigma: float = 15.0, config: _train.TrainConfig | None = None, model=None,
            progress: bool = True, log: Callable[[str], None] | None = None, hint=None,
            background: str = "mask", threshold: float = 0.5, init=None,
            detector=None, split: bool | None = None) -> SegmentResult:
    """Segment whole cells in one field without labels.

    Parameters
    ----------
    images : array (H, W) / (H, W, C), or list of (H, W) arrays
        Cell image channel(s): fluorescence and/or transmitted light.
    modalities : str or sequence of str, optional
        One of :data:`cellnb.mask.MODALITIES` per channel (``"fluorescence"``,
        ``"brightfield"``, ``"phase"``, ``"dic"``; for the mask); default
        fluorescence.
    nucleus : array (H, W), optional
        Nucleus image: markers come from it (unless `markers` is given) and,
        with ``use_nucleus=True``, it is also a network input.
    markers : array (N, 2), optional
        Marker positions. Without them and without a nucleus image, a
        phase-contrast channel places them itself
        (:func:`cellnb.synthetic_nuclei.self_trained_markers`); other modalities
        need one of the two.
    mask : array of bool (H, W), optional
        Foreground mask; default :func:`cellnb.mask.foreground_mask`.
    use_nucleus : bool
        Add the nucleus image as an input channel (paper Table I).
    patch_size : int, optional
        Patch side; default (and the working scale, always) from
        :func:`cellnb.patches.patch_geometry`, so that the cells fit.
    sigma : float
        Gaussian-disk sigma in px at the working scale (paper: 15).
    config : TrainConfig, optional
        Training parameters (step budget, seed, ...).
    model : keras.Model, optional
        An already-trained model to apply instead of training (it must take
        the same channels).
    progress : bool
        Progress bar for training.
    log : callable, optional
        Receives one line per step (default: stderr).
    hint : array of int (H, W), optional
        Hand-labelled pixels for the mask (1 = cell, 2 = background).
    background : {"mask", "threshold"}
        What integration calls background: outside the mask, every mask
        pixel going to its most probable cell (default), or the paper's
        rule, below `threshold` in every patch (:func:`cellnb.integrate.integrate`).
    threshold : float
        Probability threshold of ``background="threshold"``.
    init : keras.Model, optional
        Start the training from this model's weights instead of new ones: a
        training saved when it was interrupted, or a model trained label-free on
        other fields of the same kind (measured on a 1750x1750 synthetic field:
        a start from a demo field's model did not reach the stable minimum in
        fewer steps; README, Benchmarks). It must take the same channels; the
        patch side still follows the cells.
    detector : keras.Model, optional
        A marker detector trained on another image of the same kind
        (:func:`cellnb.synthetic_nuclei.train_marker_detector`), for markers
        from a phase-contrast image without training one here (with
        `markers` or a `nucleus` image it is refused: they place the markers).
    split : bool, optional
        Cut a label shaped like two cells in two
        (:func:`cellnb.integrate.split_lobes`): markers found in the image
        miss cells, and the flood hands a missed cell to its marked
        neighbour. Default: on when the markers are found here in a
        phase-contrast image (no nucleus image, no markers given), off for
        given markers or a nucleus image's (one per cell: there a two-lobed
        label is one cell). Pass True for markers you found in the image
        yourself. Only with ``background="mask"``.

    Returns
    -------
    SegmentResult
    """
    if model is not None and init is not None:
        raise InputError("give either model (apply without training) or init (continue "
                         "training), not both.")
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {BACKGROUNDS}, got {background!r}.")
    if not (0 < threshold < 1):
        raise InputError(f"threshold must be in (0, 1), got {threshold}.")
    img = _as_channels(images)
    h, w, c = img.shape
    check_memory((h, w), c + int(use_nucleus))
    mods = [modalities or "fluorescence"] * c if isinstance(modalities, (str, type(None))) \
        else list(modalities)
    if len(mods) != c:
        raise InputError(f"{c} image channel(s) but {len(mods)} modalities; give one per image.")
    if nucleus is not None:
        nucleus = check_image(nucleus, name="nucleus image", allow_channels=False)
        if nucleus.shape != (h, w):
            raise InputError(f"nucleus image shape {nucleus.shape} differs from the cell image "
                             f"shape {(h, w)}; use images of the same field.")
    if use_nucleus and nucleus is None:
        raise InputError("use_nucleus=True needs a nucleus image.")
    if detector is not None and (markers is not None or nucleus is not None):
        raise InputError("a marker detector places the markers of a phase-contrast image, but "
                         "markers or a nucleus image were given too; drop one of them.")
    secs = {}
    t = time.perf_counter()
    source = "given"
    if markers is None and nucleus is not None:
        markers, source = _markers.find_markers(nucleus), "the nucleus image"
    elif markers is None:
        if "phase" not in mods:
            raise InputError("no markers: give a nucleus image or a marker CSV (or synthetic "
                             "nuclei, notebook 02); only a phase-contrast image can place "
                             "them itself.")
        markers = _nuclei.self_trained_markers(img[..., mods.index("phase")],
                                               seed=(config or _train.TrainConfig()).seed,
                                               log=log, detector=detector)
        source = "the phase-contrast image (no nucleus image or markers given" + \
            ("; the given detector)" if detector is not None else ")")
    markers = check_markers(markers, (h, w), unique=True)
    if split is None:                   # markers found in the phase image miss cells
        split = source.startswith("the phase-contrast image")
    secs["markers"] = time.perf_counter() - t
    log(f"[cellnb] {len(markers)} markers" + ("" if source == "given" else f" from {source}"))
    t = time.perf_counter()
    if mask is None:
        mask = _mask.foreground_mask(img, mods, markers=markers, hint=hint)
    else:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise InputError(f"mask shape {mask.shape} differs from the image shape {(h, w)}.")
        mask = mask > 0
    secs["mask"] = time.perf_counter() - t
    if not mask.any():
        raise InputError("the foreground mask is empty: no pixel was taken for a cell. Check "
                         "the modality of each image (fluorescence, brightfield, phase, dic), "
                         "or give a mask (--mask) or a hint image (--hint).")
    log(f"[cellnb] mask covers {mask.mean():.0%} of the field")
    chans = [normalize(img[..., i]) for i in range(c)]
    if use_nucleus:
        chans.append(normalize(nucleus))
    x = np.stack(chans, -1)
    if model is not None and model.input_shape[1] is not None:
        patch_size = int(model.input_shape[1])      # the side the model was built for
    size, scale = _patches.patch_geometry(markers, mask, size=patch_size)
    if init is not None:
        from .model import with_patch_size
        if init.input_shape[-1] != x.shape[-1] + 1:     # + the Gaussian-disk channel
            raise InputError(f"the starting model takes {init.input_shape[-1] - 1} image channels, "
                             f"these patches have {x.shape[-1]}: start from a model trained "
                             "on the same channels.")
        init = with_patch_size(init, size)       # the cells decide the patch side
    ps = _patches.extract_patches(x, markers, mask, size=size, sigma=sigma, scale=scale)
    if model is None and len(ps):
        # now the largest training batch is known: check again before training
        largest = max(len(i) for i in _patches.area_batches(ps, (config or
                                                                 _train.TrainConfig()).area))
        check_memory((h, w), x.shape[-1], largest * size * size)
    where = "" if scale == 1 else f" at working scale {scale:.2f} (cells larger than the patch)"
    relief = _integrate.border_landscape(img, mods) if background == "mask" else None
    flood = _integrate.flood_options(mods)
    t = time.perf_counter()
    result = None
    if model is None:
        from .model import resolve_precision
        prec = resolve_precision((config or _train.TrainConfig()).precision)
        log(f"[cellnb] training on {len(ps)} patches of {size}x{size}{where} "
            f"(Keras backend {_train.backend()}, {prec})")
        result, probs, share = train_confident(
            ps, config, init=init, progress=progress, sigma=sigma, log=log,
            channels=list(mods) + (["nucleus"] if use_nucleus else []), mask=mask,
            labels_of=lambda p: _labels(p, ps, mask, relief, background, threshold, flood))
        model = result.model
        log(f"[cellnb] trained {result.steps} steps ({result.stop_reason})")
    secs["train"] = time.perf_counter() - t
    t = time.perf_counter()
    if result is None:
        probs = _integrate.predict_patches(model, ps)
        share = _integrate.confident_share(probs, ps)
    coverage = None
    if background == "mask":
        coverage = _integrate.mask_coverage(probs, ps, mask, threshold)
        rule = "cores flooded through the mask" if coverage < _integrate.FLOOD_BELOW \
            else "the paper's rule inside the mask"
        log(f"[cellnb] the network is confident on {coverage:.0%} of the mask: {rule}")
    labels = _labels(probs, ps, mask, relief, background, threshold, flood)
    added, joined = np.zeros((0, 2)), 0
    if split and relief is not None:
        labels, added, joined = repair_found_markers(labels, relief, markers,
                                                     join_darkness(img, mods))
        if len(added):
            log(f"[cellnb] {len(added)} label(s) held two cells: split "
                "(markers found in the image miss cells)")
        if joined:
            log(f"[cellnb] {joined} label(s) were a second piece of a cell: joined "
                "(markers found in the image fall twice into some cells)")
    secs["integrate"] = time.perf_counter() - t
    warning = _integrate.collapse_message(share)
    if warning:
        log(f"[cellnb] WARNING: {warning}.")
    return SegmentResult(labels=labels, markers=np.vstack([markers, added]), mask=mask,
                         probs=probs, patches=ps, training=result, seconds=secs,
                         confident=share, warning=warning, coverage=coverage,
                         split=len(added), joined=joined)


def _labels(probs, ps, mask, relief, background: str = "mask", threshold: float = 0.5,
            flood: dict | None = None):
    """Integration as :func:`segment` does it: in the mask (the rule from the coverage) or not."""
    if background == "threshold":
        return _integrate.integrate(probs, ps, threshold)
    return _integrate.integrate(probs, ps, threshold, mask=mask, landscape=relief,
                                **(flood or {}))


#: a first training still unsure this many steps after its warm-up is given up and repeated
UNSURE_AFTER = 100

#: on a sparse field (:func:`cellnb.train.crowded` False) where both starts stayed unsure, a third
#: scales Eq. 1's mask penalty beta by this (:func:`train_confident`)
RESCUE_BETA = 0.5

#: largest change of the mask coverage between two looks that may agree, near or above
#: :data:`cellnb.integrate.FLOOD_BELOW` (:class:`StableLabels`)
COVER_STEADY = 0.05


class StableLabels:
    """Stop a training once the segmentation it gives has stopped changing.

    A monitor for :func:`cellnb.train.train`: at each look it predicts every
    patch, integrates them into the field's labels and compares them with the
    previous look's (:func:`cellnb.metrics.same_id_iou`). Training stops
    (``"stable"``) when `times` comparisons in a row find the cells overlapping
    by at least `stable`, the network confident at every look
    (:func:`cellnb.integrate.confident_share` >=
    :data:`cellnb.integrate.COLLAPSE_SHARE`). No label is used: the test is
    whether more training still changes the answer.

    Why not the loss alone: Eq. 1 keeps falling long after the segmentation
    has settled. Scored against the truth every 25 steps (mIOU / AP@0.5),
    accuracy stayed flat from the first confident look to 300 steps while the
    loss fell from about -40 to -200: Usiigaci set1 0.665 / 0.806 at 50 steps,
    0.652 / 0.795 at 200; set13 0.574 / 0.580 at 75, 0.577 / 0.556 at 200;
    demo field_01 (fluorescence) 0.668 / 0.865 at 50, 0.672 / 0.850 at 300.
    The loss plateau rule ran on to 1000+ steps there (set1: 268 s, 0.645 /
    0.781). The labels never settle completely: borders keep moving by a
    pixel or two, and consecutive looks agree at 0.88-0.96; hence 0.9, twice.

    Parameters
    ----------
    patches : PatchSet
    labels_of : callable
        ``labels_of(probs) -> labels`` (H, W) int: the integration in use.
    stable : float
        Agreement that counts as stable (``TrainConfig.stable``).
    times : int
        Comparisons in a row that must reach it.
    start : int
        Looks before this step are skipped (the warm-up, when the network
        barely moves and would look stable).
    give_up : int, optional
        From this step on, a look at an unsure network stops the training
        (``"unsure"``) so that :func:`train_confident` can start again at once
        instead of after the whole budget.
    mask : ndarray of bool, shape (H, W), optional
        The foreground mask of the integration. With it, each look also
        measures :func:`cellnb.integrate.mask_coverage`, and where either of
        two looks is within `steady` of :data:`cellnb.integrate.FLOOD_BELOW`
        or above it, they only agree when the coverage moved by at most
        `steady` between them: there the coverage decides the integration's
        rule, so labels that agree while it still climbs have not settled.
        Measured (scored against the truth at every look, 300-step budget):
        the demo's three-channel models climb from ~0.6 to ~0.9; without
        this, field_02 stopped at 100 steps (coverage 0.71 -> 0.79, agreement
        0.91) with mIOU / AP@0.5 0.675 / 0.891, with it it trains the 300
        steps (0.689 / 0.916; the seeded watershed 0.693 / 0.916); field_01
        0.678 / 0.911 at 200 -> 0.683 / 0.927 at 275; field_04 0.679 / 0.921
        at 250 -> 0.678 / 0.929 at 300; field_03 stops where it did (200).
        One-channel demo models (coverage 0.6-0.73) and the real
        phase-contrast fields (0.3-0.5) never come near, and stop as before
        (Table I, ``bench/real_data.py``).
    steady : float
        Largest change of the mask coverage between two agreeing looks near
        or above :data:`cellnb.integrate.FLOOD_BELOW`.

    Attributes
    ----------
    checks : list of dict
        One row per look: ``step``, ``confident``, ``agreement`` (None at the
        first confident look), ``cover`` (with `mask`), ``seconds`` of the look.
    probs : ndarray or None
        The patch outputs of the last look.
    step : int
        The step of the last look.
    """

    def __init__(self, patches, labels_of: Callable, stable: float = 0.9, start: int = 0,
                 give_up: int | None = None, times: int = 2, mask=None,
                 steady: float = COVER_STEADY):
        self.patches, self.labels_of, self.stable = patches, labels_of, float(stable)
        self.start, self.give_up, self.times = int(start), give_up, int(times)
        self.mask, self.steady = mask, float(steady)
        self.checks: list[dict] = []
        self.probs, self.step, self._prev, self._agreed = None, 0, None, 0
        self._cover = None

    def __call__(self, model, step: int) -> str | None:
        if step < self.start:
            return None
        from .metrics import same_id_iou
        t = time.perf_counter()
        self.probs, self.step = _integrate.predict_patches(model, self.patches), step
        share = _integrate.confident_share(self.probs, self.patches)
        agree = cover = None
        steady = True
        if self.mask is not None:
            cover = _integrate.mask_coverage(self.probs, self.patches, self.mask)
            # only near the flood/paper boundary can a moving coverage switch the rule
            near = self._cover is not None and \
                max(cover, self._cover) >= _integrate.FLOOD_BELOW - self.steady
            steady = not near or abs(cover - self._cover) <= self.steady
        if share >= _integrate.COLLAPSE_SHARE:
            labels = self.labels_of(self.probs)
            if self._prev is not None:
                agree = same_id_iou(labels, self._prev)
            self._prev, self._cover = labels, cover
        else:
            self._prev = self._cover = None     # only confident looks in a row can agree
        settled = agree is not None and agree >= self.stable and steady
        self._agreed = self._agreed + 1 if settled else 0
        row = {"step": step, "confident": round(share, 3),
               "agreement": None if agree is None else round(agree, 4)}
        if cover is not None:
            row["cover"] = round(cover, 4)
        self.checks.append({**row, "seconds": round(time.perf_counter() - t, 2)})
        if self._agreed >= self.times:
            return "stable"
        if share < _integrate.COLLAPSE_SHARE and self.give_up is not None \
                and step >= self.give_up:
            return "unsure"
        return None


def train_confident(patches, config: _train.TrainConfig | None = None, init=None,
                    log: Callable[[str], None] | None = None, labels_of: Callable | None = None,
                    mask=None, **kwargs):
    """Train until the segmentation is stable, and once more from new weights if it came out unsure.

    With `labels_of`, training stops when the field's labels stop changing
    (:class:`StableLabels`, ``config.stable``), else at the loss plateau or
    the step budget (:func:`cellnb.train.train`).

    Whether training finds the cells or collapses into a degenerate minimum
    (every output sinks to 0) is decided in its first steps, by the random
    start and the learning rate of those steps (``TrainConfig.warmup``). When
    the trained network gives fewer than half of the markers a confident core
    (:func:`cellnb.integrate.confident_share`), the same seed is trained again
    from new weights with the other start (warm-up on <-> off), and the most
    confident model is kept. On a sparse field (:func:`cellnb.train.crowded`
    False: most of every patch outside the mask) where that one is unsure
    too, a third start keeps the first one's warm-up and scales Eq. 1's mask
    penalty beta by :data:`RESCUE_BETA`: there the penalty outweighs what a
    starting network covers. Measured on the real Usiigaci fields without
    clicks (seed 0): set40 stayed unsure with both starts (AP@0.5 0.353, its
    cells from the mask alone) and trains with half the penalty (0.415);
    set30 0.467 -> 0.459 (the second start had reached 47 % confident). As
    the second start instead of the warm-up one, half the penalty lost where
    the warm-up had rescued: set20 with clicks 0.481 -> 0.425, without 0.339
    -> 0.331.

    The first start on a sparse field also eases Eq. 1's mask penalty in
    over its first steps (``TrainConfig.beta_ramp``): on the real Usiigaci
    fields without clicks (seed 0) set1, set20 and set30 then train at the
    first start (repeated before) and set40 is repeated as before. The
    later starts run without the ramp, as their remedies were measured: the
    second start with the ramp made set40 confident at AP@0.5 0.353, against
    0.415 from the third start's half penalty.

    With `labels_of`, each start is given up
    as soon as it is still unsure :data:`UNSURE_AFTER` steps after its warm-up
    (on the real Usiigaci set20 both starts stay unsure: without this the
    second ran on to the loss plateau), and the next start gets the rest of
    ``config.max_steps``, but at least its warm-up, :data:`UNSURE_AFTER`
    steps and two more looks (``config.check_every``) in which to settle:
    budgets of 300 steps and more bound the first two starts (a first start
    that used the whole budget leaves the second one a budget of its own). A
    healthy training is never repeated, so it costs nothing there. Not with
    `init` (continuing a training): then only the warning remains.

    Parameters
    ----------
    patches : PatchSet
    config : TrainConfig, optional
    init : keras.Model, optional
        Continue from this model (:func:`cellnb.train.train`'s ``model``).
    log : callable, optional
        Receives a line when the training is repeated.
    labels_of : callable, optional
        ``labels_of(probs) -> labels``: the integration, for :class:`StableLabels`.
    mask : ndarray of bool, shape (H, W), optional
        The integration's foreground mask: with `labels_of`, the stop also
        waits for its coverage to settle (:class:`StableLabels`).
    **kwargs
        Passed to :func:`cellnb.train.train` (``progress``, ``channels``, ``sigma``,
        ``callback``).

    Returns
    -------
    result : TrainResult
        ``result.retried`` is True when a second (or third) training ran.
    probs : ndarray of float32, shape (N, k, k)
        The kept model's patch outputs (:func:`cellnb.integrate.predict_patches`).
    share : float
        Their :func:`cellnb.integrate.confident_share`.
    """
    from dataclasses import replace
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cfg = (config or _train.TrainConfig()).check()

    def run(c, model, give_up):
        warm = _train.resolve_warmup(c.warmup, patches)
        mon = None if labels_of is None else StableLabels(
            patches, labels_of, c.stable, start=warm, mask=mask,
            give_up=None if give_up is None else warm + give_up)
        res = _train.train(patches, c, model=model, monitor=mon, **kwargs)
        if mon is not None and mon.step == res.steps and mon.probs is not None:
            probs = mon.probs                   # the last look saw these very weights
        else:
            probs = _integrate.predict_patches(res.model, patches)
        return res, probs, _integrate.confident_share(probs, patches)

    result, probs, share = run(cfg, init, None if init is not None else UNSURE_AFTER)
    if share >= _integrate.COLLAPSE_SHARE or init is not None:
        return result, probs, share
    # a start given up early leaves the rest of the budget to the next one, so that
    # ``max_steps`` bounds the whole training, but never less than the next start's own
    # warm-up, UNSURE_AFTER steps and two more looks to settle (a small classroom budget, a third
    # start: the rescue still has a chance); one that ran the whole budget unsure gets the next
    # start a budget of its own
    first_warmup = result.config.warmup
    other_warmup = 0 if first_warmup else _train.WARMUP_STEPS
    starts = [(other_warmup, cfg.beta, f"warmup={other_warmup}")]
    if not _train.crowded(patches):
        beta = cfg.beta * RESCUE_BETA
        starts.append((first_warmup, beta,
                       f"beta={beta:g} (the mask penalty x {RESCUE_BETA:g}: a sparse field)"))
    used, last, last_share = 0, result, share
    for warmup, beta, change in starts:
        used += last.steps
        left = cfg.max_steps
        if last.stop_reason == "unsure":
            left = max(cfg.max_steps - used, warmup + UNSURE_AFTER + 2 * cfg.check_every)
        log(f"[cellnb] the network is not confident ({last_share:.0%} of the markers after "
            f"{last.steps} steps); training again from new weights with {change}")
        # each later start is its own remedy, measured without the first start's beta ramp
        last, probs2, last_share = run(replace(cfg, warmup=warmup, beta=beta, max_steps=left,
                                               beta_ramp=0), None, UNSURE_AFTER)
        if last_share > share:
            result, probs, share = last, probs2, last_share
        if last_share >= _integrate.COLLAPSE_SHARE:
            break
    result.retried = True
    return result, probs, share


def segment_field(field, channels: Sequence[str], markers=None, mask=None, **kwargs
                  ) -> SegmentResult:
    """:func:`segment` on a :class:`~cellnb.datasets.Field`, by channel names.

    ``channels`` may include ``"nucleus"`` to use it as an input (Table I);
    the mask is built from the cell channels only (with the field's hint,
    if it has one). Markers: `markers`, else the nucleus image's, else the
    field's ``markers.csv``, else the phase-contrast image's own
    (:func:`field_markers`, seeded by ``config.seed``; ``detector=`` a
    saved marker detector to skip training one; then `split` defaults to
    True, as in :func:`segment`).
    """
    names = list(channels)
    use_nuc = "nucleus" in names
    cell = [n for n in names if n != "nucleus"]
    if not cell:
        raise InputError("choose at least one cell channel (fluorescence or brightfield).")
    missing = [n for n in names if n not in field.images]
    if missing:
        raise InputError(f"{field.name}: no channel {missing}; it has {list(field.images)}.")
    detector = kwargs.pop("detector", None)
    if markers is None and field.nucleus is None:
        seed = (kwargs.get("config") or _train.TrainConfig()).seed
        if field.markers is None:       # found in the phase image, as segment would
            kwargs.setdefault("split", True)
        markers = field_markers(field, seed=seed, detector=detector, log=kwargs.get("log"))
    elif detector is not None:
        raise InputError(f"{field.name}: a marker detector places the markers of a "
                         "phase-contrast field, but this one has a nucleus image or markers "
                         "were given; drop the detector.")
    kwargs.setdefault("hint", field.hint)
    return segment([field.images[n] for n in cell], [modality_of(n) for n in cell],
                   nucleus=field.nucleus, markers=markers, mask=mask, use_nucleus=use_nuc,
                   **kwargs)


def field_markers(field, sigma: float = 1.0, source: str = "auto", seed: int = 0,
                  log: Callable[[str], None] | None = None, detector=None) -> np.ndarray:
    """The field's own markers: from its nucleus image, its ``markers.csv`` or its phase image.

    Parameters
    ----------
    field : Field
    sigma : float
        Denoising of the nucleus image (:func:`cellnb.markers.find_markers`).
    source : {"auto", "image"}
        ``"auto"``: the nucleus image, else ``markers.csv``, else (a
        phase-contrast field) the phase image. ``"image"``: the phase-contrast
        channel alone (:func:`cellnb.synthetic_nuclei.self_trained_markers`),
        no stain and no clicks, even where a ``markers.csv`` exists.
    seed : int
        Seeds the marker detector of a phase-contrast image.
    log : callable, optional
        Where a note goes when the detector is skipped (a small image).
    detector : keras.Model, optional
        A marker detector trained on another image of the same kind
        (:func:`cellnb.synthetic_nuclei.train_marker_detector`), used instead
        of training one on this phase-contrast field (with ``source="auto"``,
        a nucleus image or ``markers.csv`` still comes first).

    Returns
    -------
    ndarray of float64, shape (N, 2)

    Raises
    ------
    InputError
        When the field has none of them (then use synthetic nuclei, notebook 02).
    """
    if source not in ("auto", "image"):
        raise InputError(f"field_markers: source must be 'auto' or 'image', got {source!r}.")
    phase = [c for c in field.cell_channels if modality_of(c) == "phase"]
    if source == "image" and not phase:
        raise InputError(f"{field.name}: markers from the image need a phase-contrast channel, "
                         f"but its channels are {field.cell_channels}; use its nucleus image or "
                         "markers.csv (markers_from: nucleus) or synthetic nuclei (notebook 02).")
    if source == "auto" and field.nucleus is not None:
        return _markers.find_markers(field.nucleus, sigma=sigma)
    if source == "auto" and field.markers is not None:
        return field.markers
    if phase:
        return _nuclei.self_trained_markers(field.images[phase[0]], seed=seed, log=log,
                                            detector=detector)
    raise InputError(f"{field.name}: no nucleus image and no markers.csv, so no marker per "
                     "cell; add a markers.csv (one click per cell: Fiji multi-point or napari "
                     "points export) or use synthetic nuclei (notebook 02).")


def config_channels(config: str) -> list[str]:
    """``"fluorescence+nucleus"`` -> ``["fluorescence", "nucleus"]`` (a training input set)."""
    chans = [c.strip() for c in str(config).split("+") if c.strip()]
    if not chans:
        raise InputError(f"empty channel configuration {config!r}; e.g. 'fluorescence+nucleus'.")
    return chans


def field_patches(field, channels: Sequence[str], markers, mask, patch_size: int | None = None,
                  sigma: float = 15.0):
    """Patches of a field for a channel set (same recipe for training and applying).

    The patch side (unless given) and the working scale follow the cells
    (:func:`cellnb.patches.patch_geometry`).
    """
    size, scale = _patches.patch_geometry(markers, mask, size=patch_size)
    return _patches.extract_patches(field.stack(list(channels)), markers, mask, size=size,
                                    sigma=sigma, scale=scale)


def _warn_collapse(share: float, what: str) -> None:
    """A :class:`CollapseWarning` (shown in a notebook's output) when the network is unsure."""
    warning = _integrate.collapse_message(share)
    if warning:
        import warnings
        warnings.warn(f"{what}: {warning}.", CollapseWarning, stacklevel=3)


def apply_model(model, meta: dict, field, channels: Sequence[str], markers, mask,
                threshold: float = 0.5, background: str = "mask", split: bool = False
                ) -> np.ndarray:
    """Label image of `field` from a trained model (patches made as the model expects).

    Parameters
    ----------
    model, meta :
        From :func:`cellnb.train.load_model`; ``meta`` gives the patch size
        and sigma the model was trained with.
    channels : sequence of str
        The model's input channels (e.g. ``["fluorescence", "nucleus"]``).
    markers : ndarray (N, 2)
    mask : ndarray of bool (H, W)
    threshold : float
        With ``background="threshold"``: background where every patch is
        below it (paper: 0.5).
    background : {"mask", "threshold"}
        As in :func:`segment`.
    split : bool
        As in :func:`segment` (for markers found in a phase-contrast image).

    Returns
    -------
    labels : ndarray of int32, shape (H, W); label k + 1 = marker k, then
        the cells split off (labels N + 1, ...)
    """
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {BACKGROUNDS}, got {background!r}.")
    if model.input_shape[-1] != len(channels) + 1:
        raise InputError(f"the model takes {model.input_shape[-1] - 1} image channel(s) but "
                         f"{len(channels)} were given ({list(channels)}); apply it to the "
                         "channels it was trained on.")
    ps = field_patches(field, channels, markers, mask, meta.get("patch_size"),
                       meta.get("sigma", 15.0))
    probs = _integrate.predict_patches(model, ps)
    _warn_collapse(_integrate.confident_share(probs, ps), field.name)
    relief = _field_relief(field, channels) if background == "mask" else None
    labels = _labels(probs, ps, mask, relief, background, threshold, field_flood(channels))
    # as in segment: only in the mask, where the border landscape draws the cut
    if split and relief is not None:
        cell = [c for c in channels if c != "nucleus"]
        dark = join_darkness(field.stack(cell), [modality_of(c) for c in cell])
        labels = repair_found_markers(labels, relief, markers, dark)[0]
    return labels


def repair_found_markers(labels, relief, markers, darkness
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """The repairs of a segmentation from markers found in the image, not given one per cell.

    Such markers miss cells and fall twice into others: a label shaped like
    two cells is cut in two (:func:`cellnb.integrate.split_lobes`), then, on
    a phase-contrast channel, two touching labels with no halo between
    their markers are joined (:func:`cellnb.integrate.join_cut_cells`; never
    a cell the first repair has just cut off).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Label k + 1 belongs to ``markers[k]``.
    relief : ndarray of float, shape (H, W)
        :func:`cellnb.integrate.border_landscape` of the cell channels.
    markers : ndarray, shape (N, 2)
    darkness : ndarray of float, shape (H, W), or None
        :func:`join_darkness` of the cell channels (None: no phase-contrast
        channel, no join). Computed once by the caller, as a slider redraws
        the labels many times from one image.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
    added : ndarray of float64, shape (K, 2)
        The markers of the cells split off (labels N + 1, ...).
    joined : int
        How many labels were joined into a neighbour (they stay empty).
    """
    labels, added = _integrate.split_lobes(labels, relief, markers)
    if darkness is None:
        return labels, added, 0
    labels, joined = _integrate.join_cut_cells(labels, darkness, np.vstack([markers, added]),
                                               upto=len(markers))
    return labels, added, joined


def join_darkness(images, modalities) -> np.ndarray | None:
    """The phase darkness :func:`repair_found_markers` joins by, or None without phase contrast.

    Parameters
    ----------
    images : ndarray, shape (H, W, C) or (H, W)
        The cell channels (one channel: 2-D).
    modalities : sequence of str
        One per channel.

    Returns
    -------
    ndarray of float64, shape (H, W), or None
        :func:`cellnb.mask.phase_darkness` of the normalised phase-contrast channel.
    """
    mods = list(modalities)
    if "phase" not in mods:
        return None
    imgs = np.asarray(images)
    phase = imgs[..., mods.index("phase")] if imgs.ndim == 3 else imgs
    return _mask.phase_darkness(normalize(phase))


def field_flood(channels: Sequence[str]) -> dict:
    """:func:`cellnb.integrate.flood_options` of a field's cell channels (not the nucleus)."""
    return _integrate.flood_options([modality_of(c) for c in channels if c != "nucleus"])


def _field_relief(field, channels: Sequence[str]) -> np.ndarray:
    """The border landscape of `field`'s cell channels (the nucleus guides no border)."""
    cell = [c for c in channels if c != "nucleus"]
    return _integrate.border_landscape(field.stack(cell), [modality_of(c) for c in cell])


def classical_labels(field, cell_channels: Sequence[str], markers, mask,
                     method: str = "propagate", seed_nuclei: bool = True) -> np.ndarray:
    """The classical seeded segmentation of `field` from given markers and mask.

    Parameters
    ----------
    cell_channels : sequence of str
        Image channels whose gradient guides ``"propagate"``.
    markers : ndarray, shape (N, 2)
    mask : ndarray of bool, shape (H, W)
    method : {"propagate", "nearest"}
        :func:`cellnb.baseline.propagate` (CellProfiler-like) or the
        nearest-marker split of the mask.
    seed_nuclei : bool
        Seed ``"propagate"`` with the segmented nuclei (when the field has a
        nucleus image and the markers came from it), not only the markers.

    Returns
    -------
    ndarray of int, shape (H, W)
        Label k + 1 for marker k.
    """
    from . import baseline
    if method == "nearest":
        return baseline.nearest_marker(mask, markers)
    if method != "propagate":
        raise InputError(f"baseline method must be 'propagate' or 'nearest', got {method!r}.")
    nuclei = None
    if field.nucleus is not None and seed_nuclei:
        nuclei = _markers.segment_nuclei(field.nucleus)
    return baseline.propagate(field.stack(list(cell_channels)), mask, markers, nuclei=nuclei)


def synthetic_field_markers(field, model, meta: dict, allow_empty: bool = False):
    """Synthetic nucleus image and markers of `field` (notebook 02).

    Returns
    -------
    prob : ndarray of float32 (H, W)
    markers : ndarray (N, 2)
        Empty only with `allow_empty`. :func:`cellnb.cache.synthetic_markers`
        also saves them to a run folder for notebooks 04-06.
    """
    from . import synthetic_nuclei as sn
    prob = sn.predict_nuclei(model, field.stack(meta["channels"]))
    return prob, sn.synthetic_markers(prob, meta.get("radius"), allow_empty=allow_empty)


def compare_marker_sources(field, channels: Sequence[str], synthetic, config=None,
                           crop: int | None = None, log: Callable[[str], None] | None = None
                           ) -> tuple[list[dict], dict]:
    """The same unsupervised segmentation from the real and from synthetic markers (notebook 02).

    Parameters
    ----------
    field : Field
        A field with a nucleus image (the real markers) and, for the scores,
        ground truth.
    channels : sequence of str
        Training input set, e.g. ``["fluorescence"]``.
    synthetic : ndarray, shape (N, 2)
        Markers from the synthetic nucleus image of the whole field.
    config : TrainConfig, optional
        Training of both segmentations (same seed).
    crop : int, optional
        Segment only the top-left `crop` x `crop` px (both marker sets cut
        alike), so that a class waits ~1 minute per training instead of ~3.

    Returns
    -------
    rows : list of dict
        One per marker source: markers, mIOU and AP@0.5 against the truth
        (when the field has it), agreement of the synthetic run with the real one.
    labels : dict
        ``{"real": labels, "synthetic": labels}``, each (H, W) int32 of the
        (cropped) field.
    """
    from . import metrics
    from .io import check_markers
    syn = check_markers(synthetic, field.shape)
    g = field
    if crop is not None:
        g = field.crop(slice(0, int(crop)), slice(0, int(crop)))
        syn = syn[(syn[:, 0] <= g.shape[0] - 1) & (syn[:, 1] <= g.shape[1] - 1)]
    if g.nucleus is None:
        raise InputError(f"{field.name}: no nucleus image, so no real markers to compare with.")
    quiet = log or (lambda s: None)
    runs = {"real": segment_field(g, channels, config=config, progress=False, log=quiet),
            "synthetic": segment_field(g, channels, markers=syn, config=config,
                                       progress=False, log=quiet)}
    rows = []
    for name, res in runs.items():
        row = {"field": g.name, "inputs": "+".join(channels), "markers": name,
               "n_markers": len(res.markers)}
        if g.cells is not None:
            s = metrics.summarize(g.cells, res.labels)
            row.update(mIOU_vs_truth=round(s["mIOU"], 3), AP50=round(s["AP50"], 3))
        row["agreement_with_real"] = "" if name == "real" else \
            round(metrics.agreement(runs["real"].labels, res.labels)["mean"], 3)
        rows.append(row)
    return rows, {k: r.labels for k, r in runs.items()}
