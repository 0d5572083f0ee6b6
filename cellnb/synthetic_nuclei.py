"""Step 2 (optional): synthetic nucleus images, for markers without a nucleus stain.

When no nucleus image was acquired, the paper trains a UNet on a few
(cell image, nucleus image) pairs to predict a "synthetic nucleus" image
from the cell image alone; blob detection on that prediction gives the
markers (paper: about 2 % false negatives and 2 % false positives).

The recipe here:

* target: the thresholded nucleus image (:func:`nucleus_target`, the same
  Otsu segmentation that :func:`cellnb.markers.find_markers` uses);
* network: the UNet of :mod:`cellnb.model` (fully convolutional, so it is
  trained on large tiles and applied to fields of any size);
* loss: binary cross-entropy, Adam; training stops when the windowed mean
  cross-entropy falls below a target (paper: 0.15), on a plateau, or at a
  step budget;
* prediction: overlapping tiles, each tile's border margin discarded, so
  there are no seams (:func:`predict_nuclei`);
* markers: :func:`cellnb.markers.detect_blobs` with scales from the
  expected nucleus radius (:func:`synthetic_markers`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .io import InputError, check_image, normalize
from .markers import detect_blobs, estimate_nucleus_radius, segment_nuclei
from .model import predict_batch

__all__ = ["NucleusConfig", "NucleusResult", "nucleus_target", "train_nucleus_model",
           "predict_nuclei", "synthetic_markers", "detector_targets", "self_trained_markers",
           "train_marker_detector",
           "save_nucleus_model", "load_nucleus_model", "ROLES"]


@dataclass
class NucleusConfig:
    """Parameters of the synthetic-nucleus model (saved with it).

    Attributes
    ----------
    tile : int
        Side of the square training tiles (multiple of ``2**depth``).
    batch : int
        Tiles per step.
    width, depth : int
        UNet size (:func:`cellnb.model.build_unet`).
    learning_rate : float
    max_steps : int
        Step budget.
    target : float
        Stop when the mean cross-entropy over the last `window` steps is
        below this (paper: 0.15).
    window, patience, min_delta :
        Plateau rule as in :mod:`cellnb.train`.
    prior : float
        Initial output probability (the final bias; :func:`cellnb.model.build_unet`).
    norm : bool
        Group normalisation in the UNet. Off by default: without it the
        network is exactly translation-equivariant away from tile borders,
        which makes the tiled prediction seamless (:func:`predict_nuclei`).
        With it, marker F1 on an unseen demo field was ~0.05 higher, but a
        tile's statistics differ from the whole field's and tiled outputs
        differed by up to 0.39 (visible seams).
    seed : int
    """

    tile: int = 128
    batch: int = 8
    width: int = 16
    depth: int = 3
    learning_rate: float = 1e-3
    max_steps: int = 800
    target: float = 0.15
    window: int = 50
    patience: int = 3
    min_delta: float = 0.01
    prior: float = 0.2
    norm: bool = False
    seed: int = 0

    def check(self) -> "NucleusConfig":
        for name in ("tile", "batch", "width", "depth", "max_steps", "window", "patience"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise InputError(f"NucleusConfig.{name} must be a positive integer, got {v}.")
        if self.tile % (2 ** self.depth):
            raise InputError(f"NucleusConfig.tile {self.tile} must be a multiple of "
                             f"2**depth = {2 ** self.depth}.")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"NucleusConfig.learning_rate must be > 0, got "
                             f"{self.learning_rate}.")
        if not (0 <= self.target < 1):
            raise InputError(f"NucleusConfig.target must be in [0, 1), got {self.target}.")
        if not (0 < self.prior < 1):
            raise InputError(f"NucleusConfig.prior must be in (0, 1), got {self.prior}.")
        return self


@dataclass
class NucleusResult:
    """What :func:`train_nucleus_model` returns.

    Attributes
    ----------
    model : keras.Model
        Cell image channels (H, W, C) -> nucleus logit (H, W, 1).
    config : NucleusConfig
    history : list of dict
        One row per step: step, loss (cross-entropy), seconds.
    stop_reason : str
        ``"target"``, ``"plateau"`` or ``"max_steps"``.
    channels : list of str
        Names of the input channels, in order.
    radius : float
        Median nucleus radius of the training targets, px (the blob scale).
    """

    model: object
    config: NucleusConfig
    history: list = dc_field(default_factory=list)
    stop_reason: str = ""
    channels: list = dc_field(default_factory=list)
    radius: float = 0.0

    @property
    def losses(self) -> np.ndarray:
        return np.array([h["loss"] for h in self.history])


def nucleus_target(nucleus) -> np.ndarray:
    """The training target: the nucleus image thresholded as in notebook 01.

    Parameters
    ----------
    nucleus : array_like, shape (H, W)

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    return segment_nuclei(nucleus) > 0


def _stack(image) -> np.ndarray:
    """(H, W) or (H, W, C) -> float32 (H, W, C), each channel percentile-normalised."""
    img = check_image(image, name="cell image")
    img = img[..., None] if img.ndim == 2 else img
    return np.stack([normalize(img[..., c]) for c in range(img.shape[-1])], -1)


def train_nucleus_model(images: Sequence, targets: Sequence, config: NucleusConfig | None = None,
                        channels: Sequence[str] | None = None, progress: bool = True,
                        weights: Sequence | None = None, label: str = "nucleus model"
                        ) -> NucleusResult:
    """Train a UNet to predict the nucleus mask from cell image channels.

    Parameters
    ----------
    images : sequence of array_like, each (H, W) or (H, W, C)
        Cell images of the training fields (as few as two); every field must
        have the same channels C. Fields may differ in size but must be at
        least ``config.tile`` on each side.
    targets : sequence of array_like of bool, each (H, W)
        Nucleus masks (:func:`nucleus_target` of each field's nucleus image).
    config : NucleusConfig, optional
    channels : sequence of str, optional
        Channel names (recorded with the model).
    progress : bool
        Progress bar with the loss (stderr).
    weights : sequence of array_like of float, each (H, W), optional
        Per-pixel weight of the cross-entropy, 0 = not known (left out of the
        loss); default 1 everywhere. :func:`self_trained_markers` leaves
        out the cell area its own targets cannot vouch for.
    label : str
        What the progress lines call the model.

    Returns
    -------
    NucleusResult
    """
    import keras
    from .model import build_unet
    from .patches import augment_np
    from .train import Plateau, StepReport, TrainStep, set_seed
    cfg = (config or NucleusConfig()).check()
    if len(images) == 0 or len(images) != len(targets):
        raise InputError(f"train_nucleus_model: got {len(images)} images and {len(targets)} "
                         "targets; give one nucleus mask per cell image (at least one field).")
    xs = [_stack(im) for im in images]
    ys = [np.asarray(t) > 0 for t in targets]
    if weights is None:
        ws = [np.ones(y.shape, np.float32) for y in ys]
    else:
        ws = [np.asarray(w, np.float32) for w in weights]
        if len(ws) != len(ys) or any(w.shape != y.shape for w, y in zip(ws, ys)):
            raise InputError("train_nucleus_model: give one weight image per target, of the "
                             "target's shape.")
        if any(not np.all(np.isfinite(w)) or w.min() < 0 or not w.any() for w in ws):
            raise InputError("train_nucleus_model: weights must be finite, >= 0 and not all 0.")
    n_ch = {x.shape[-1] for x in xs}
    if len(n_ch) > 1:
        raise InputError(f"train_nucleus_model: fields have different channel counts "
                         f"{sorted(n_ch)}; use the same channels for every field.")
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y.shape != x.shape[:2]:
            raise InputError(f"field {i + 1}: target shape {y.shape} differs from the image "
                             f"shape {x.shape[:2]}.")
        if min(y.shape) < cfg.tile:
            raise InputError(f"field {i + 1} ({y.shape}) is smaller than the training tile "
                             f"{cfg.tile}; lower NucleusConfig.tile.")
        if not y.any():
            raise InputError(f"field {i + 1}: the nucleus target is empty; check the nucleus "
                             "image.")
    radius = float(np.median([estimate_nucleus_radius(y) for y in ys]))
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_unet(xs[0].shape[-1], cfg.width, cfg.depth, None, prior=cfg.prior,
                       norm=cfg.norm, name="cellnb_nuclei", seed=cfg.seed)
    opt = keras.optimizers.Adam(cfg.learning_rate)   # not compiled in: saved models stay small

    def cross_entropy(call, x, y, w):
        from keras import ops
        z = ops.cast(call(x), "float32")
        bce = ops.reshape(ops.binary_crossentropy(y, z, from_logits=True), (-1,))
        w = ops.reshape(w, (-1,))
        return ops.sum(bce * w) / ops.maximum(ops.sum(w), 1.0), {}

    step = TrainStep(model, opt, cross_entropy)

    t = cfg.tile
    history, reason = [], "max_steps"
    plateau = Plateau(cfg.patience, cfg.min_delta)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.max_steps, desc=label, unit="step", file=sys.stderr)
    report = StepReport(f"{label} on {len(xs)} field(s)", cfg.max_steps)
    t0 = time.perf_counter()
    try:
        for k in range(cfg.max_steps):
            xb = np.empty((cfg.batch, t, t, xs[0].shape[-1]), np.float32)
            yb = np.empty((cfg.batch, t, t, 1), np.float32)
            wb = np.empty((cfg.batch, t, t, 1), np.float32)
            for b in range(cfg.batch):
                i = rng.integers(len(xs))
                r, c = (rng.integers(0, s - t + 1) for s in ys[i].shape)
                xb[b] = xs[i][r:r + t, c:c + t]
                yb[b, ..., 0] = ys[i][r:r + t, c:c + t]
                wb[b, ..., 0] = ws[i][r:r + t, c:c + t]
            codes = rng.integers(0, 8, cfg.batch)
            loss = step(augment_np(xb, codes), augment_np(yb, codes), augment_np(wb, codes))[0]
            history.append({"step": k + 1, "loss": loss, "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(bce=f"{loss:.3f}")
            report.update(k + 1, loss)
            if (k + 1) % cfg.window == 0:
                mean = float(np.mean([h["loss"] for h in history[-cfg.window:]]))
                if mean < cfg.target:
                    reason = "target"
                    break
                if plateau.update(mean):
                    reason = "plateau"
                    break
    finally:
        step.sync()
    if bar is not None:
        bar.close()
    if history:
        report.done(len(history), reason, history[-1]["loss"])
    return NucleusResult(model=model, config=cfg, history=history, stop_reason=reason,
                         channels=list(channels or [f"channel{c}" for c in
                                                    range(xs[0].shape[-1])]),
                         radius=radius)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Probabilities from logits, without overflow for large negative logits."""
    from scipy.special import expit
    return expit(np.asarray(z, np.float32)).astype(np.float32)


def predict_nuclei(model, image, tile: int = 1024, margin: int = 64,
                   batch_size: int = 4) -> np.ndarray:
    """Synthetic nucleus image: the model's probability map over a whole field.

    A field up to `tile` x `tile` is predicted in one pass. A larger one is
    cut into overlapping tiles; each tile keeps only its centre (a `margin`
    is dropped on every inner side), so the network never answers at a tile
    border it could not see past. With the default network (no
    normalisation layer, see :class:`NucleusConfig`) the stitched map then
    equals a single pass over the whole field: there are no seams (tested).

    Parameters
    ----------
    model : keras.Model
        From :func:`train_nucleus_model` or :func:`load_nucleus_model`.
    image : array_like, shape (H, W) or (H, W, C)
        Cell image channels, as at training.
    tile : int
        Largest side predicted in one pass, and the tile side for larger
        fields (a multiple of 16); smaller uses less memory (~0.7 GB at 1024).
    margin : int
        Context discarded at inner tile borders, px: at least the reach of
        the network (~52 px for depth 3), and a multiple of ``2**depth`` so
        the pooling grid lines up; then the tiled map equals a single pass
        over the whole field (tested).
    batch_size : int

    Returns
    -------
    prob : ndarray of float32, shape (H, W), values in [0, 1]
    """
    x = _stack(image)
    h, w, c = x.shape
    if model.input_shape[-1] != c:
        raise InputError(f"the nucleus model takes {model.input_shape[-1]} channel(s) but the "
                         f"image has {c}; use the channels it was trained on.")
    if tile % 16 or tile <= 2 * margin:
        raise InputError(f"predict_nuclei: tile must be a multiple of 16 and larger than "
                         f"2 * margin; got tile {tile}, margin {margin}.")
    if h <= tile and w <= tile:
        # one pass over the whole field (padded to the pooling grid): nothing to stitch
        ph, pw = -h % 16, -w % 16
        xx = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        z = predict_batch(model, xx[None])[0, :h, :w, 0]
        return _sigmoid(z)
    core = tile - 2 * margin
    ny, nx = -(-h // core), -(-w // core)
    # reflect-pad so every tile is full and every core pixel has `margin` of context
    padded = np.pad(x, ((margin, ny * core - h + margin), (margin, nx * core - w + margin),
                        (0, 0)), mode="reflect")
    corners = [(i * core, j * core) for i in range(ny) for j in range(nx)]
    out = np.zeros((ny * core, nx * core), np.float32)
    for s in range(0, len(corners), batch_size):
        chunk = corners[s:s + batch_size]
        xb = np.stack([padded[r:r + tile, q:q + tile] for r, q in chunk])
        z = predict_batch(model, xb)[..., 0]
        for (r, q), zz in zip(chunk, z):
            out[r:r + core, q:q + core] = zz[margin:margin + core, margin:margin + core]
    return _sigmoid(out[:h, :w])


def synthetic_markers(prob, radius: float | None = None, threshold: float = 0.2,
                      allow_empty: bool = False) -> np.ndarray:
    """Markers from a synthetic nucleus image by blob detection.

    Parameters
    ----------
    prob : ndarray of float, shape (H, W)
        From :func:`predict_nuclei`.
    radius : float, optional
        Expected nucleus radius, px (the model's ``radius``); default
        measured on ``prob > 0.5``.
    threshold : float
        Minimum blob-filtered probability at a marker. The prediction is
        soft at nucleus edges and on dim cells, so the blob filter's peak is
        often below 0.5; 0.2 gave the best marker F1 on unseen demo fields
        (0.5 loses a third of the nuclei).
    allow_empty : bool
        Return an empty (0, 2) array instead of raising when nothing is
        found (for reports on a poorly trained model).

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
        Same form as :func:`cellnb.markers.find_markers`.
    """
    p = check_image(prob, name="synthetic nucleus image", allow_channels=False)
    if radius is None:
        radius = estimate_nucleus_radius(p > 0.5)
    m = detect_blobs(p, radius, threshold)
    if len(m) == 0 and not allow_empty:
        raise InputError("synthetic nucleus image: no nucleus found; is the model trained on "
                         "this kind of image (same modality and magnification)?")
    return m


# --------------------------------------------------------------------------
# transmitted light without a stain: a detector trained on the image's own bodies
# --------------------------------------------------------------------------
#: The self-trained detector's schedule: 150 steps at learning rate 2e-3, always (its weighted
#: loss starts far below the paper's 0.15 target, so the target is off, and the plateau rule's
#: 6 windows of 50 steps cannot end it sooner: the same work on every field); few positives
#: (prior 0.05). Against the earlier 300 steps at 1e-3, whole no-click bench on the 12
#: Usiigaci fields (docs/measurements.md): marker F1 0.835 -> 0.841 (fewer, surer additions:
#: precision 0.807 -> 0.834, recall 0.873 -> 0.857), AP@0.5 0.434 -> 0.456, mIOU 0.548 ->
#: 0.545, the marker step ~35 s instead of 65-100 s per field on the slower 2-core machine;
#: markers alone with seed 1, F1 0.837 against 0.831 (seed 0: 0.841 against 0.835). Earlier,
#: 150 steps at 1e-3 gave marker F1 0.805 against 0.809 (before the rounded cells); with a
#: variant of the bodies' markers (measured, not taken: docs/measurements.md) 0.816 against
#: 0.809, but fewer additions on the sparse fields: no-click mIOU 0.527 -> 0.517 (set30 0.458
#: -> 0.410). Two 150-step detectors of different seeds averaged: F1 0.816, as one. Trained
#: in bfloat16 (as the cells' UNet on this CPU): 22 s instead of 35 s per field, but F1 0.800
#: against 0.809 (down on 8 of 12 fields) and no-click AP@0.5 0.410 against 0.419; over
#: seeds 0 and 1 of each, F1 0.803 against 0.808 (both bfloat16 runs below both float32
#: ones), AP@0.5 0.418 against 0.424: a small, steady cost where the marker target is
#: furthest; float32 kept. 100 steps at 3e-3 (12 s less per field): F1 0.850 / 0.857 (seeds 0 /
#: 1) against 0.855 / 0.853, no-click AP@0.5 0.501 against 0.507 (set40 collapses again):
#: not taken. Batches of 4 tiles instead of 8 (11-15 s less per field): F1 0.859 / 0.852 against
#: 0.855 / 0.854, no-click mIOU / AP@0.5 0.561 / 0.497 against 0.569 / 0.507 (set40 collapses
#: again): not taken.
DETECTOR = NucleusConfig(max_steps=150, learning_rate=2e-3, target=0.0, patience=6, prior=0.05)
#: Median body radius at the detector's working scale, px (cells at 10x: scale ~0.5).
DETECTOR_BODY_RADIUS = 7.0
#: Target disk radius at a body's marker, and the detection settings, in working-scale px.
DETECTOR_DISK = 4.0
DETECTOR_SMOOTH = 3.0
#: A detection is a maximum of the smoothed output above this share of the detector's median
#: (smoothed) output at the body markers it learned from, and above :data:`DETECTOR_FLOOR`.
#: How sure a 150-step detector ends up varies with the field and the seed (median at the
#: bodies 0.52-0.81 on the 12 Usiigaci fields), so a fixed cut at 0.7 added 2 markers on set3
#: with seeds 0 and 1 and 13 with seed 2. Measured on those 12 fields (the detectors of seeds
#: 0 and 1 cached, every rule applied to the same outputs; rounded cells after): fixed 0.7
#: F1 0.844 / 0.844 (seed 0 / 1), fixed 0.5 0.847 / 0.849, 0.8-1.1 x the median 0.847-0.850,
#: 0.9 x the median with the floor 0.849 / 0.850 (set3 0.85 / 0.83 -> 0.88 / 0.88).
DETECTOR_THRESHOLD = 0.9
#: ... a detection the detector is less than even odds on is never taken.
DETECTOR_FLOOR = 0.5
#: A detection becomes a marker only this many median body radii from every body marker.
DETECTOR_SPACING = 3.0
#: A rounded cell (:func:`cellnb.markers.rounded_cells`) is added only this many median body
#: radii from every other marker.
ROUNDED_SPACING = 1.5


def detector_targets(image, bodies, markers, mask, scale: float, disk: float = DETECTOR_DISK):
    """What the self-trained detector learns from one phase-contrast field, at a working scale.

    * a cell centre: a disk of radius `disk` at each body's marker;
    * not a cell centre: the background (outside the dilated foreground
      mask, and no dark body);
    * left out (weight 0): the rest of the foreground mask, where cells
      without a dark body may sit (what the detector is for), and each
      body beyond its disk: a body can hold two touching cells whose dark
      parts merged, and its far part taught "not a centre" taught the
      detector to miss the second one. Measured on the 12 Usiigaci fields
      (whole no-click pipeline, seeds 0 / 1): with the far parts taught
      "not a centre" (beyond ``2.5 * disk``), marker recall 0.857 / 0.854,
      precision 0.856 / 0.852, F1 0.854 / 0.850, ``segment`` mIOU / AP@0.5
      0.550 / 0.491 and 0.549 / 0.497; left out, recall 0.892 / 0.892,
      precision 0.824 / 0.824, F1 0.855 / 0.854, mIOU / AP@0.5 0.561 /
      0.490 and 0.565 / 0.495 (mIOU up on 7 and 11 of the 12 fields).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Normalised phase-contrast image.
    bodies : ndarray of int, shape (H, W)
        Dark bodies (:func:`cellnb.markers.phase_markers` with ``return_bodies``).
    markers : ndarray, shape (N, 2)
        One marker per body.
    mask : ndarray of bool, shape (H, W)
        Foreground mask without markers (:func:`cellnb.mask.foreground_mask`).
    scale : float in (0, 1]
    disk : float

    Returns
    -------
    x : ndarray of float32, shape (h, w)
        The image at the working scale.
    target : ndarray of bool, shape (h, w)
    weight : ndarray of float32, shape (h, w)
        1 where the target is known, 0 elsewhere.
    """
    from scipy import ndimage as ndi
    from .patches import mask_to_scale, to_scale
    x, body, mk = to_scale(np.asarray(image, np.float32)[..., None], bodies > 0, markers, scale)
    # the halo side of the mask's border is unsure: the background starts 4 px out
    fg = mask_to_scale(ndi.binary_dilation(mask, iterations=4), scale)
    seeds = np.ones(x.shape[:2], bool)
    rc = np.round(mk).astype(int)
    seeds[rc[:, 0], rc[:, 1]] = False
    near = ndi.distance_transform_edt(seeds)
    target = near <= disk
    known = target | (~fg & ~body)
    return x[..., 0], target, known.astype(np.float32)


@dataclass
class _PhaseBodies:
    """One phase-contrast image's dark bodies and the detector's working scale."""

    norm: np.ndarray        # normalised image, (H, W)
    markers: np.ndarray     # one per body, (N, 2)
    bodies: np.ndarray      # body k + 1 = marker k, (H, W) int
    radius: float           # median body radius, px
    scale: float            # working scale: the median body radius becomes DETECTOR_BODY_RADIUS
    artefact: np.ndarray    # near a dark structure longer than any cell: no marker, (H, W) bool

    @classmethod
    def of(cls, img: np.ndarray) -> "_PhaseBodies":
        from .markers import long_dark_structures, phase_markers
        mk, bodies = phase_markers(img, return_bodies=True)
        radius = float(np.sqrt(np.median(np.bincount(bodies.ravel())[1:]) / np.pi))
        return cls(normalize(img), mk, bodies, radius,
                   float(np.clip(DETECTOR_BODY_RADIUS / radius, 0.25, 1.0)),
                   long_dark_structures(img, radius))

    def away(self, points: np.ndarray) -> np.ndarray:
        """`points` (K, 2) not near a long dark structure (see :func:`long_dark_structures`)."""
        rc = np.round(points).astype(int).reshape(-1, 2)
        return points[~self.artefact[rc[:, 0], rc[:, 1]]]

    def too_small(self, tile: int) -> bool:
        return min(self.norm.shape) * self.scale < tile

    def working(self) -> tuple[np.ndarray, np.ndarray]:
        """The image (h, w) and the body markers (N, 2) at the working scale."""
        from .patches import to_scale
        x, _, mk = to_scale(self.norm.astype(np.float32)[..., None], None, self.markers,
                            self.scale)
        return x[..., 0], mk


def _detector_config(config: NucleusConfig | None, seed: int) -> NucleusConfig:
    """`config`, or :data:`DETECTOR` with `seed`; checked."""
    return (config or NucleusConfig(**{**asdict(DETECTOR), "seed": seed})).check()


def _train_detector(parts: _PhaseBodies, cfg: NucleusConfig, progress: bool) -> NucleusResult:
    """The detector trained on this image's bodies (:func:`detector_targets`)."""
    from .mask import foreground_mask
    fg = foreground_mask(parts.norm, "phase")
    x, target, weight = detector_targets(parts.norm, parts.bodies, parts.markers, fg, parts.scale)
    return train_nucleus_model([x], [target], cfg, channels=["phase"], progress=progress,
                               weights=[weight], label="marker detector")


def _detect(parts: _PhaseBodies, detector) -> np.ndarray:
    """Body markers, then the detector's maxima away from every body (see DETECTOR_SPACING)."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree
    from skimage.feature import peak_local_max
    if detector.input_shape[-1] != 1:
        raise InputError(f"the marker detector takes one phase-contrast channel; this model "
                         f"takes {detector.input_shape[-1]}: pass a detector saved by "
                         "train_marker_detector (cellnb markers --save-detector).")
    image, taught = parts.working()
    smooth = ndi.gaussian_filter(predict_nuclei(detector, image), DETECTOR_SMOOTH)
    shape = np.array(parts.norm.shape)
    # the detector's own answer at the centres it was taught sets its cut (DETECTOR_THRESHOLD)
    at = np.round(taught).astype(int)
    cut = max(DETECTOR_FLOOR, DETECTOR_THRESHOLD * float(np.median(smooth[at[:, 0], at[:, 1]])))
    peaks = peak_local_max(smooth, min_distance=5, threshold_abs=cut, exclude_border=False)
    found = np.clip((peaks + 0.5) / parts.scale - 0.5, 0, shape - 1)
    rc = np.round(found).astype(int)
    found = parts.away(found[~ndi.binary_dilation(parts.bodies > 0, iterations=3)[rc[:, 0],
                                                                                 rc[:, 1]]])
    mk = parts.markers
    if len(found):
        found = found[cKDTree(mk).query(found)[0] >= DETECTOR_SPACING * parts.radius]
    return np.vstack([mk, found]) if len(found) else mk


def self_trained_markers(image, seed: int = 0, progress: bool = False,
                         return_parts: bool = False, log: Callable[[str], None] | None = None,
                         config: NucleusConfig | None = None, detector=None):
    """Markers from a phase-contrast image alone: dark bodies, a detector trained on them, rounded.

    The synthetic-nucleus idea (notebook 02) without a nucleus image: the
    dark bodies of :func:`cellnb.markers.phase_markers` teach a small UNet
    (:func:`train_nucleus_model`, :data:`DETECTOR`) what a cell centre looks
    like in this field (:func:`detector_targets`), and its maxima outside
    the bodies add the cells whose body is too faint or too small for the
    threshold, where the detector is at least :data:`DETECTOR_THRESHOLD` as
    sure as at the bodies themselves (median). A detection within :data:`DETECTOR_SPACING` median body
    radii of a body marker is taken for a second centre of that cell and
    dropped. The field is processed at the scale that makes the median body
    radius :data:`DETECTOR_BODY_RADIUS` px (0.5 for cells at 10x). Last, the
    rounded cells (dividing or detaching: a thick bright ring round a grey
    centre, no dark body, so neither step finds them;
    :func:`cellnb.markers.rounded_cells`) farther than
    :data:`ROUNDED_SPACING` median body radii from every marker are added.
    No marker, of any of the three kinds, lies within 4 median body radii
    of a dark structure longer than 40 of them
    (:func:`cellnb.markers.long_dark_structures`: a culture insert's wall).

    Measured on the 12 Usiigaci NIH/3T3 fields of ``../shared/data``
    (``bench/real_data.py --markers image``): F1 0.794 -> 0.809 against the
    annotated cells (precision 0.833 -> 0.799, recall 0.768 -> 0.829), up on
    10 fields, down on set1 and set34 (a second marker in large flat cells,
    debris on a sparse field); ``segment`` then gains on every field in
    mIOU (0.492 -> 0.528). The rounded cells take F1 to 0.831 (recall
    0.873, precision 0.800) and ``segment``'s mIOU / AP@0.5 to 0.544 / 0.427
    (from 0.528 / 0.419); kept clear of the insert walls, F1 0.835 and
    0.548 / 0.434; with the detector's shorter, faster schedule
    (:data:`DETECTOR`), F1 0.841 and 0.545 / 0.456; with one cell's split
    bodies joined (:func:`cellnb.markers.join_split_bodies`), F1 0.844
    (precision 0.853, recall 0.842) and 0.542 / 0.475; with the detector's
    cut set from its own output at the bodies (:data:`DETECTOR_THRESHOLD`),
    F1 0.849 (precision 0.848, recall 0.855) and 0.548 / 0.477; with a cut
    body's marker inside the image (:func:`cellnb.markers.body_depth`) and the
    rounded cells' rings in the mask, F1 0.854 and 0.545 / 0.480 with seed 0
    (0.849 and 0.548 / 0.477 before), F1 0.850 and 0.545 / 0.486 with seed 1
    (0.850 and 0.545 / 0.477 before); with unmarked objects walled in by their
    halo left to the background (:func:`cellnb.integrate.enclosed_basins`),
    the same markers and 0.542 / 0.483 with seed 0 (0.545 / 0.483 once a basin
    inside one cell is given back to it); with labels shaped like two cells cut in
    two after training (:func:`cellnb.integrate.split_lobes`), 0.550 / 0.491; with
    each body's far part left out of the detector's training
    (:func:`detector_targets`), F1 0.855 (precision 0.824, recall 0.892) and
    0.561 / 0.490 (seed 1: F1 0.854, 0.565 / 0.495); with a rounded cell
    nearer than the spacing to a marker kept when their thick rings lie
    between them (:data:`cellnb.markers.ROUNDED_APART`: two cells just
    divided, a rounded cell on a flat one), F1 0.857 (precision 0.823, recall
    0.898; 7 markers more, on set10, set13 and set31) and, with the later
    repairs, 0.575 / 0.541 (0.572 / 0.538 before). About 20-40 s per
    1022 x 1024 field on 2 CPU cores (20-35 s on the README timing table's machine, 33-39 s
    on one 1.75x slower). The settings were chosen once over all 12 fields, for images at
    that magnification (the scale follows the body size).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Phase-contrast image (cells dark, halo bright), at least 128 px per
        side at the working scale.
    seed : int
        Seeds the detector's training: the same image and seed give the same markers.
    progress : bool
        Progress bar of the training (stderr).
    return_parts : bool
        Also return how many of the markers are body markers (they come first).
    log : callable, optional
        Receives one line when the image is too small for the detector's
        training tiles: then the body markers alone are returned.
    config : NucleusConfig, optional
        The detector's training (default :data:`DETECTOR` with `seed`).
    detector : keras.Model, optional
        A detector already trained on another image of the same kind
        (:func:`train_marker_detector`, e.g. the first frame of a
        time-lapse): applied without training, so the 20-40 s of training
        are skipped (its prediction takes ~0.2 s).
        Measured on the 12 Usiigaci fields (``bench/detector_reuse.py``): a
        detector trained on one field gives F1 0.802-0.808 on all 12
        against 0.809 with each field's own.

    Returns
    -------
    markers : ndarray of float64, shape (N, 2)
    n_bodies : int
        Only with ``return_parts=True``.

    Raises
    ------
    InputError
        For a bad image or no body.
    """
    from .markers import rounded_cells
    img = check_image(image, name="phase-contrast image", allow_channels=False)
    parts = _PhaseBodies.of(img)
    out = parts.markers
    if detector is None:
        cfg = _detector_config(config, seed)
        if parts.too_small(cfg.tile):
            (log or (lambda s: print(s, file=sys.stderr)))(
                f"[cellnb] phase-contrast image {img.shape} is smaller than the marker "
                f"detector's training tile ({int(np.ceil(cfg.tile / parts.scale))} px per side "
                "at this cell size): markers from the dark bodies and rounded cells alone")
        else:
            detector = _train_detector(parts, cfg, progress).model
    if detector is not None:
        out = _detect(parts, detector)
    out = np.vstack([out, parts.away(rounded_cells(parts.norm, out,
                                                   ROUNDED_SPACING * parts.radius))])
    return (out, len(parts.markers)) if return_parts else out


def train_marker_detector(image, seed: int = 0, progress: bool = False,
                          config: NucleusConfig | None = None) -> NucleusResult:
    """Train the marker detector of :func:`self_trained_markers` on one phase-contrast image.

    For a time-lapse or a plate of fields of one kind: train it once, save
    it (:func:`save_nucleus_model` with ``role="marker detector"``) and
    pass it to :func:`self_trained_markers` (``detector=``) for the other
    images; each image still finds its own dark bodies and working scale.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Phase-contrast image, at least ``config.tile`` px per side at the
        working scale.
    seed : int
        Seeds the training.
    progress : bool
        Progress bar (stderr).
    config : NucleusConfig, optional
        Default :data:`DETECTOR` with `seed`.

    Returns
    -------
    NucleusResult
        ``model`` maps the normalised image at the working scale (H, W, 1)
        to a cell-centre logit; ``radius`` is this image's median body radius.

    Raises
    ------
    InputError
        For a bad image, no dark body, or an image too small to train on.
    """
    img = check_image(image, name="phase-contrast image", allow_channels=False)
    parts = _PhaseBodies.of(img)
    cfg = _detector_config(config, seed)
    if parts.too_small(cfg.tile):
        raise InputError(f"phase-contrast image {img.shape} is too small to train the marker "
                         f"detector on: it needs {int(np.ceil(cfg.tile / parts.scale))} px per "
                         "side at this cell size; train it on a larger image of the same kind.")
    result = _train_detector(parts, cfg, progress)
    result.radius = parts.radius
    return result


#: What a saved synthetic_nuclei model is for (one saved without a role is a nucleus model).
ROLES = ("nucleus", "marker detector")


def save_nucleus_model(result: NucleusResult, path: str | Path,
                       trained_on: Sequence[str] = (), role: str = "nucleus") -> Path:
    """Save the model (``.keras``) and its parameters (``.json``), atomically.

    `trained_on` (field names) is recorded so an evaluation can tell seen
    from unseen fields; `role` is ``"nucleus"`` (a synthetic-nucleus model,
    notebook 02) or ``"marker detector"`` (:func:`train_marker_detector`),
    so neither is applied in the other's place.
    """
    from .train import save_keras
    if role not in ROLES:
        raise InputError(f"save_nucleus_model: role must be one of {ROLES}, got {role!r}.")
    meta = {"kind": "synthetic_nuclei", "role": role, "config": asdict(result.config),
            "channels": result.channels, "radius": result.radius,
            "stop_reason": result.stop_reason, "trained_on": list(trained_on),
            "history": result.history}
    return save_keras(result.model, path, meta)


def load_nucleus_model(path: str | Path, role: str = "nucleus"):
    """Load a model saved by :func:`save_nucleus_model`, checking what it is for.

    Parameters
    ----------
    path : str or Path
    role : {"nucleus", "marker detector"}
        What the caller will use it as.

    Returns
    -------
    model : keras.Model
    meta : dict
        ``config``, ``channels``, ``radius``, ``history``...
    """
    from .train import load_model
    if role not in ROLES:
        raise InputError(f"load_nucleus_model: role must be one of {ROLES}, got {role!r}.")
    model, meta = load_model(path)
    if meta and meta.get("kind") != "synthetic_nuclei":
        raise InputError(f"{path}: this is not a synthetic-nucleus model (it is a cell "
                         "segmentation model); pass the model saved by notebook 02"
                         + (" or by cellnb markers --save-detector." if role != "nucleus"
                            else "."))
    have = meta.get("role", "nucleus") if meta else role
    if have != role:
        hint = ("pass it as --detector (markers of phase-contrast images)" if have != "nucleus"
                else "pass it as --nucleus-model with --markers-from synthetic")
        raise InputError(f"{path}: this is a {have} model, not a {role} model; {hint}.")
    return model, meta
