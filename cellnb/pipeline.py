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
from .mask import modality_of

__all__ = ["SegmentResult", "CollapseWarning", "BACKGROUNDS", "segment", "segment_field", "field_markers",
           "modality_of", "config_channels",
           "cached_markers", "cached_mask", "field_patches", "cached_model", "apply_model",
           "cached_labels", "baseline_labels", "classical_labels", "cached_nucleus_model", "synthetic_field_markers"]


class CollapseWarning(UserWarning):
    """A trained model gives almost no marker a confident core (:func:`cellnb.integrate.collapse_message`)."""


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
    confident : float
        Share of markers with a confident core in their own patch
        (:func:`cellnb.integrate.confident_share`).
    warning : str or None
        :func:`cellnb.integrate.collapse_message`: set when the training
        collapsed and the labels come from the mask alone.
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
            background: str = "mask", threshold: float = 0.5, init=None) -> SegmentResult:
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
        Marker positions; required when there is no nucleus image.
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
    secs = {}
    t = time.perf_counter()
    if markers is None:
        if nucleus is None:
            raise InputError("no markers: give a nucleus image or a marker CSV (or synthetic "
                             "nuclei, notebook 02).")
        markers = _markers.find_markers(nucleus)
    markers = check_markers(markers, (h, w), unique=True)
    secs["markers"] = time.perf_counter() - t
    log(f"[cellnb] {len(markers)} markers")
    t = time.perf_counter()
    if mask is None:
        mask = _mask.foreground_mask(img, mods, markers=markers, hint=hint)
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
    t = time.perf_counter()
    result = None
    if model is None:
        from .model import resolve_precision
        prec = resolve_precision((config or _train.TrainConfig()).precision)
        log(f"[cellnb] training on {len(ps)} patches of {size}x{size}{where} "
            f"(Keras backend {_train.backend()}, {prec})")
        result = _train.train(ps, config, model=init, progress=progress, sigma=sigma,
                              channels=list(mods) + (["nucleus"] if use_nucleus else []))
        model = result.model
        log(f"[cellnb] trained {result.steps} steps ({result.stop_reason})")
    secs["train"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = _integrate.predict_patches(model, ps)
    if background == "mask":
        labels = _integrate.integrate(probs, ps, threshold, mask=mask,
                                      landscape=_integrate.border_landscape(img, mods))
    else:
        labels = _integrate.integrate(probs, ps, threshold)
    secs["integrate"] = time.perf_counter() - t
    share = _integrate.confident_share(probs, ps)
    warning = _integrate.collapse_message(share)
    if warning:
        log(f"[cellnb] WARNING: {warning}.")
    return SegmentResult(labels=labels, markers=markers, mask=mask, probs=probs, patches=ps,
                         training=result, seconds=secs, confident=share, warning=warning)


def segment_field(field, channels: Sequence[str], markers=None, mask=None, **kwargs
                  ) -> SegmentResult:
    """:func:`segment` on a :class:`~cellnb.datasets.Field`, by channel names.

    ``channels`` may include ``"nucleus"`` to use it as an input (Table I);
    the mask is built from the cell channels only (with the field's hint,
    if it has one). Markers: `markers`, else the nucleus image's, else the
    field's ``markers.csv``.
    """
    names = list(channels)
    use_nuc = "nucleus" in names
    cell = [n for n in names if n != "nucleus"]
    if not cell:
        raise InputError("choose at least one cell channel (fluorescence or brightfield).")
    missing = [n for n in names if n not in field.images]
    if missing:
        raise InputError(f"{field.name}: no channel {missing}; it has {list(field.images)}.")
    if markers is None and field.nucleus is None:
        markers = field_markers(field)
    kwargs.setdefault("hint", field.hint)
    return segment([field.images[n] for n in cell], [modality_of(n) for n in cell],
                   nucleus=field.nucleus, markers=markers, mask=mask, use_nucleus=use_nuc,
                   **kwargs)


def field_markers(field, sigma: float = 1.0) -> np.ndarray:
    """The field's own markers: from its nucleus image, else its ``markers.csv``.

    Parameters
    ----------
    field : Field
    sigma : float
        Denoising of the nucleus image (:func:`cellnb.markers.find_markers`).

    Returns
    -------
    ndarray of float64, shape (N, 2)

    Raises
    ------
    InputError
        When the field has neither (then use synthetic nuclei, notebook 02).
    """
    if field.nucleus is not None:
        return _markers.find_markers(field.nucleus, sigma=sigma)
    if field.markers is not None:
        return field.markers
    raise InputError(f"{field.name}: no nucleus image and no markers.csv, so no marker per "
                     "cell; add a markers.csv (one click per cell: Fiji multi-point or napari "
                     "points export) or use synthetic nuclei (notebook 02).")


# --------------------------------------------------------------------------
# run-folder helpers for the notebooks: load a step's result, or make and save it
# --------------------------------------------------------------------------
def config_channels(config: str) -> list[str]:
    """``"fluorescence+nucleus"`` -> ``["fluorescence", "nucleus"]`` (a training input set)."""
    chans = [c.strip() for c in str(config).split("+") if c.strip()]
    if not chans:
        raise InputError(f"empty channel configuration {config!r}; e.g. 'fluorescence+nucleus'.")
    return chans


def cached_markers(field, run, source: str = "nucleus"):
    """Markers from the run folder, or computed from the nucleus image (and saved) now.

    Parameters
    ----------
    source : {"nucleus", "synthetic"}
        ``"nucleus"``: notebook 01's markers (computed now if missing): from the
        nucleus image, or the field's ``markers.csv`` when it has none;
        ``"synthetic"``: notebook 02's markers from a synthetic nucleus image
        (must exist). One run folder should use one source throughout.
    """
    from .io import read_markers, write_markers
    if source not in ("nucleus", "synthetic"):
        raise InputError(f"markers_from must be 'nucleus' or 'synthetic', got {source!r}.")
    p = run.markers(field.name, source)
    if p.exists():
        return read_markers(p)
    if source == "synthetic":
        raise InputError(f"{field.name}: no synthetic-nucleus markers at {p}; run notebook 02 "
                         "first (or use markers_from: nucleus).")
    m = field_markers(field)
    write_markers(p, m)
    return m


def cached_mask(field, run, cell_channels: Sequence[str], markers=None) -> np.ndarray:
    """Mask from the given cell channels (notebook 03), loaded or computed and saved."""
    from .io import read_labels, write_image
    cell = [c for c in cell_channels if c != "nucleus"]
    p = run.mask(field.name, "+".join(cell))
    if p.exists():
        return read_labels(p) > 0
    markers = cached_markers(field, run) if markers is None else markers
    m = _mask.foreground_mask(np.stack([field.images[c] for c in cell], -1),
                              [modality_of(c) for c in cell], markers=markers, hint=field.hint)
    write_image(p, m.astype(np.uint8))
    return m


def field_patches(field, channels: Sequence[str], markers, mask, patch_size: int | None = None,
                  sigma: float = 15.0):
    """Patches of a field for a channel set (same recipe for training and applying).

    The patch side (unless given) and the working scale follow the cells
    (:func:`cellnb.patches.patch_geometry`).
    """
    size, scale = _patches.patch_geometry(markers, mask, size=patch_size)
    return _patches.extract_patches(field.stack(list(channels)), markers, mask, size=size,
                                    sigma=sigma, scale=scale)


def cached_model(field, config: str, run, train_config: _train.TrainConfig | None = None,
                 patch_size: int | None = None, progress: bool = True,
                 markers_from: str = "nucleus"):
    """The model for (field, channel config): loaded from the run, or trained and saved.

    Returns
    -------
    model, meta : keras.Model, dict
        ``meta`` as saved by :func:`cellnb.train.save_model` (loss history...),
        with ``confident``: the share of markers with a confident core
        (:func:`cellnb.integrate.confident_share`); a :class:`CollapseWarning`
        says when it is too low.
    """
    path = run.model(f"{field.name}__{config}")
    if path.exists():
        return _train.load_model(path)
    chans = config_channels(config)
    mk = cached_markers(field, run, markers_from)
    ps = field_patches(field, chans, mk, cached_mask(field, run, chans, mk), patch_size)
    res = _train.train(ps, train_config, progress=progress, channels=chans)
    share = _integrate.confident_share(_integrate.predict_patches(res.model, ps), ps)
    _warn_collapse(share, f"{field.name} · {config}")
    _train.save_model(res, path, confident=round(share, 3))
    return _train.load_model(path)


def _warn_collapse(share: float, what: str) -> None:
    """A :class:`CollapseWarning` (shown in a notebook's output) when the network is unsure."""
    warning = _integrate.collapse_message(share)
    if warning:
        import warnings
        warnings.warn(f"{what}: {warning}.", CollapseWarning, stacklevel=3)


def apply_model(model, meta: dict, field, channels: Sequence[str], markers, mask,
                threshold: float = 0.5, background: str = "mask") -> np.ndarray:
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

    Returns
    -------
    labels : ndarray of int32, shape (H, W); label k + 1 = marker k
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
    if background == "threshold":
        return _integrate.integrate(probs, ps, threshold)
    cell = [c for c in channels if c != "nucleus"]
    relief = _integrate.border_landscape(field.stack(cell), [modality_of(c) for c in cell])
    return _integrate.integrate(probs, ps, threshold, mask=mask, landscape=relief)


def cached_labels(field, config: str, run, train_config: _train.TrainConfig | None = None,
                  threshold: float = 0.5, model_field=None, progress: bool = True,
                  markers_from: str = "nucleus", overwrite: bool = False,
                  background: str = "mask") -> np.ndarray:
    """Label image of (field, config) from the run folder, or made (and saved) now.

    Parameters
    ----------
    model_field : Field, optional
        Apply the model trained on this other field (the paper's unseen-image
        test); default the field's own model. Saved as
        ``labels/<field>__<config>__model-<other>.tif``.
    overwrite : bool
        Integrate again even if the label image exists (notebook 05 does, so
        a new `threshold` or `background` takes effect).
    background : {"mask", "threshold"}
        Integration's background rule (:func:`segment`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
    """
    from .io import read_labels, write_labels
    src = model_field if model_field is not None else field
    tag = config if src is field else f"{config}__model-{src.name}"
    p = run.labels(field.name, tag)
    if p.exists() and not overwrite:
        return read_labels(p).astype(np.int32)
    chans = config_channels(config)
    model, meta = cached_model(src, config, run, train_config, progress=progress,
                               markers_from=markers_from)
    mk = cached_markers(field, run, markers_from)
    labels = apply_model(model, meta, field, chans, mk, cached_mask(field, run, chans, mk),
                         threshold, background)
    write_labels(p, labels)
    return labels


def baseline_labels(field, run, cell_channels: Sequence[str], method: str = "propagate",
                    markers_from: str = "nucleus", mask: str = "cellnb") -> np.ndarray:
    """A classical seeded segmentation of `field`, on the CNN's markers.

    Parameters
    ----------
    cell_channels : sequence of str
        Image channels for the mask (and, for ``"propagate"``, the gradient).
    method : {"propagate", "nearest"}
        :func:`cellnb.baseline.propagate` (CellProfiler-like, seeded by the
        nuclei of notebook 01's segmentation) or the nearest-marker split.
    mask : {"cellnb", "classical"}
        Inside the CNN's own mask (notebook 03), or inside the mask a
        classical pipeline makes itself from the first cell channel
        (:func:`cellnb.baseline.classical_mask`, one Otsu threshold).
    """
    from .baseline import classical_mask
    cell = [c for c in cell_channels if c != "nucleus"]
    mk = cached_markers(field, run, markers_from)
    if mask == "cellnb":
        m = cached_mask(field, run, cell, mk)
    elif mask == "classical":
        m = classical_mask(field.images[cell[0]], modality_of(cell[0]))
    else:
        raise InputError(f"baseline mask must be 'cellnb' or 'classical', got {mask!r}.")
    return classical_labels(field, cell, mk, m, method,
                            seed_nuclei=markers_from == "nucleus")


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


def cached_nucleus_model(train_fields, inputs: str, run, config=None, progress: bool = True,
                         pretrained=None):
    """Synthetic-nucleus model for an input set (notebook 02), loaded or trained and saved.

    Parameters
    ----------
    train_fields : sequence of Field
        Fields with a nucleus image to learn from (as few as two).
    inputs : str
        Cell channels, e.g. ``"fluorescence"`` or ``"fluorescence+brightfield"``.
    config : NucleusConfig, optional
    pretrained : path-like, optional
        A folder holding ``nuclei__<inputs>.keras`` (e.g. ``data/models``):
        use that model instead of training one.

    Returns
    -------
    model, meta : keras.Model, dict
        Saved as ``models/nuclei__<inputs>.keras``.
    """
    from pathlib import Path
    from . import synthetic_nuclei as sn
    if pretrained is not None:
        p = Path(pretrained) / f"nuclei__{inputs}.keras"
        if not p.exists():
            raise InputError(f"{p}: no pretrained synthetic-nucleus model for {inputs!r}; "
                             "train one (pretrained: null) or use `python -m cellnb "
                             "train-nuclei`.")
        return sn.load_nucleus_model(p)
    path = run.model(f"nuclei__{inputs}")
    if path.exists():
        return sn.load_nucleus_model(path)
    chans = config_channels(inputs)
    missing = [f.name for f in train_fields if f.nucleus is None]
    if missing or not train_fields:
        raise InputError(f"training a synthetic-nucleus model needs fields with a nucleus "
                         f"image; {missing or 'no fields'} have none.")
    res = sn.train_nucleus_model([f.stack(chans) for f in train_fields],
                                 [sn.nucleus_target(f.nucleus) for f in train_fields],
                                 config, channels=chans, progress=progress)
    sn.save_nucleus_model(res, path, trained_on=[f.name for f in train_fields])
    return sn.load_nucleus_model(path)


def synthetic_field_markers(field, model, meta: dict, run=None, allow_empty: bool = False):
    """Synthetic nucleus image and markers of `field`; markers saved to the run folder.

    Returns
    -------
    prob : ndarray of float32 (H, W)
    markers : ndarray (N, 2)
        Also written to ``markers/<field>__synthetic.csv`` when `run` is
        given, where notebooks 04-06 read them with ``markers_from:
        synthetic``. Empty only with `allow_empty` (then nothing is written).
    """
    from . import synthetic_nuclei as sn
    from .io import write_markers
    prob = sn.predict_nuclei(model, field.stack(meta["channels"]))
    mk = sn.synthetic_markers(prob, meta.get("radius"), allow_empty=allow_empty)
    if run is not None and len(mk):
        write_markers(run.markers(field.name, "synthetic"), mk)
    return prob, mk
