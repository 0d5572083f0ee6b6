"""The whole method on one field, in one call (paper Fig. 1).

markers -> mask -> patches -> unsupervised training -> integration.
Used by ``python -m cellnb segment`` and by the notebooks when they need a
step's input that an earlier notebook did not produce.
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
from . import train as _train
from .io import InputError, check_image, check_markers, normalize

__all__ = ["SegmentResult", "segment", "segment_field", "modality_of", "config_channels",
           "cached_markers", "cached_mask", "field_patches", "cached_model"]


@dataclass
class SegmentResult:
    """Output of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        0 = background, k + 1 = marker k.
    markers : ndarray, shape (N, 2)
    mask : ndarray of bool, shape (H, W)
    probs : ndarray of float32, shape (N, k, k)
        Per-patch cell probabilities.
    patches : PatchSet
    training : TrainResult or None
        None when an already-trained model was applied.
    seconds : dict
        Wall time of each step.
    """

    labels: np.ndarray
    markers: np.ndarray
    mask: np.ndarray
    probs: np.ndarray
    patches: object
    training: object = None
    seconds: dict = dc_field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(len(np.unique(self.labels[self.labels > 0])))


def modality_of(name: str) -> str:
    """Mask modality for a channel name: bright-field-like names, else fluorescence."""
    n = name.lower()
    return "brightfield" if any(k in n for k in ("bright", "bf", "phase", "dic", "transmit")) \
        else "fluorescence"


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


def segment(images, modalities: Sequence[str] | str | None = None, nucleus=None, markers=None,
            mask=None, use_nucleus: bool = False, patch_size: int | None = None,
            sigma: float = 15.0, config: _train.TrainConfig | None = None, model=None,
            progress: bool = True, log: Callable[[str], None] | None = None) -> SegmentResult:
    """Segment whole cells in one field without labels.

    Parameters
    ----------
    images : array (H, W) / (H, W, C), or list of (H, W) arrays
        Cell image channel(s): fluorescence and/or bright-field.
    modalities : str or sequence of str, optional
        ``"fluorescence"``/``"brightfield"`` per channel (for the mask);
        default fluorescence.
    nucleus : array (H, W), optional
        Nucleus image: markers come from it (unless `markers` is given) and,
        with ``use_nucleus=True``, it is also a network input.
    markers : array (N, 2), optional
        Marker positions; required when there is no nucleus image.
    mask : array of bool (H, W), optional
        Foreground mask; default :func:`cellnb.mask.foreground_mask`.
    use_nucleus : bool
        Add the nucleus image as an input channel (paper Table I).
    patch_size : int, optional
        Default :func:`cellnb.patches.default_patch_size`.
    sigma : float
        Gaussian-disk sigma (paper: 15).
    config : TrainConfig, optional
        Training parameters (step budget, seed, ...).
    model : keras.Model, optional
        An already-trained model to apply instead of training (it must take
        the same channels).
    progress : bool
        Progress bar for training.
    log : callable, optional
        Receives one line per step (default: stderr).

    Returns
    -------
    SegmentResult
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    img = _as_channels(images)
    h, w, c = img.shape
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
    secs = {}
    t = time.perf_counter()
    if markers is None:
        if nucleus is None:
            raise InputError("no markers: give a nucleus image or a marker CSV (or synthetic "
                             "nuclei, notebook 02).")
        markers = _markers.find_markers(nucleus)
    markers = check_markers(markers, (h, w))
    secs["markers"] = time.perf_counter() - t
    log(f"[cellnb] {len(markers)} markers")
    t = time.perf_counter()
    if mask is None:
        mask = _mask.foreground_mask(img, mods, markers=markers)
    else:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise InputError(f"mask shape {mask.shape} differs from the image shape {(h, w)}.")
        mask = mask > 0
    secs["mask"] = time.perf_counter() - t
    log(f"[cellnb] mask covers {mask.mean():.0%} of the field")
    chans = [normalize(img[..., i]) for i in range(c)]
    if use_nucleus:
        chans.append(normalize(nucleus))
    x = np.stack(chans, -1)
    size = patch_size or _patches.default_patch_size(markers)
    ps = _patches.extract_patches(x, markers, mask, size=size, sigma=sigma)
    t = time.perf_counter()
    result = None
    if model is None:
        log(f"[cellnb] training on {len(ps)} patches of {size}x{size}")
        result = _train.train(ps, config, progress=progress, sigma=sigma,
                              channels=list(mods) + (["nucleus"] if use_nucleus else []))
        model = result.model
        log(f"[cellnb] trained {result.steps} steps ({result.stop_reason})")
    secs["train"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = _integrate.predict_patches(model, ps)
    labels = _integrate.integrate(probs, ps)
    secs["integrate"] = time.perf_counter() - t
    return SegmentResult(labels=labels, markers=markers, mask=mask, probs=probs, patches=ps,
                         training=result, seconds=secs)


def segment_field(field, channels: Sequence[str], markers=None, mask=None, **kwargs
                  ) -> SegmentResult:
    """:func:`segment` on a :class:`~cellnb.datasets.Field`, by channel names.

    ``channels`` may include ``"nucleus"`` to use it as an input (Table I);
    the mask is built from the cell channels only.
    """
    names = list(channels)
    use_nuc = "nucleus" in names
    cell = [n for n in names if n != "nucleus"]
    if not cell:
        raise InputError("choose at least one cell channel (fluorescence or brightfield).")
    missing = [n for n in names if n not in field.images]
    if missing:
        raise InputError(f"{field.name}: no channel {missing}; it has {list(field.images)}.")
    return segment([field.images[n] for n in cell], [modality_of(n) for n in cell],
                   nucleus=field.nucleus, markers=markers, mask=mask, use_nucleus=use_nuc,
                   **kwargs)


# --------------------------------------------------------------------------
# run-folder helpers for the notebooks: load a step's result, or make and save it
# --------------------------------------------------------------------------
def config_channels(config: str) -> list[str]:
    """``"fluorescence+nucleus"`` -> ``["fluorescence", "nucleus"]`` (a training input set)."""
    chans = [c.strip() for c in str(config).split("+") if c.strip()]
    if not chans:
        raise InputError(f"empty channel configuration {config!r}; e.g. 'fluorescence+nucleus'.")
    return chans


def cached_markers(field, run):
    """Markers of notebook 01 from the run folder, or computed (and saved) now."""
    from .io import read_markers, write_markers
    p = run.markers(field.name)
    if p.exists():
        return read_markers(p)
    if field.nucleus is None:
        raise InputError(f"{field.name}: no nucleus image and no markers in {p.parent}; run "
                         "notebook 02 (synthetic nuclei) or provide markers.")
    m = _markers.find_markers(field.nucleus)
    write_markers(p, m)
    return m


def cached_mask(field, run, cell_channels: Sequence[str], markers=None) -> np.ndarray:
    """Mask from the given cell channels (notebook 03), loaded or computed and saved."""
    from .io import read_image, write_image
    cell = [c for c in cell_channels if c != "nucleus"]
    p = run.mask(field.name, "+".join(cell))
    if p.exists():
        return read_image(p) > 0
    markers = cached_markers(field, run) if markers is None else markers
    m = _mask.foreground_mask(np.stack([field.images[c] for c in cell], -1),
                              [modality_of(c) for c in cell], markers=markers)
    write_image(p, m.astype(np.uint8))
    return m


def field_patches(field, channels: Sequence[str], markers, mask, patch_size: int | None = None,
                  sigma: float = 15.0):
    """Patches of a field for a channel set (same recipe for training and applying)."""
    size = patch_size or _patches.default_patch_size(markers)
    return _patches.extract_patches(field.stack(list(channels)), markers, mask, size=size,
                                    sigma=sigma)


def cached_model(field, config: str, run, train_config: _train.TrainConfig | None = None,
                 patch_size: int | None = None, progress: bool = True):
    """The model for (field, channel config): loaded from the run, or trained and saved.

    Returns
    -------
    model, meta : keras.Model, dict
        ``meta`` as saved by :func:`cellnb.train.save_model` (loss history...).
    """
    path = run.model(f"{field.name}__{config}")
    if path.exists():
        return _train.load_model(path)
    chans = config_channels(config)
    mk = cached_markers(field, run)
    ps = field_patches(field, chans, mk, cached_mask(field, run, chans, mk), patch_size)
    res = _train.train(ps, train_config, progress=progress, channels=chans)
    _train.save_model(res, path)
    return _train.load_model(path)
