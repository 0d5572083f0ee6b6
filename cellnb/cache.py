"""The notebooks' run folder as a cache: load a step's result, or make it now and save it.

Each notebook of the series is one step of the method (paper Fig. 1) and keeps its results in a
run folder (:class:`cellnb.io.RunFolder`: ``markers/``, ``masks/``, ``models/``, ``labels/``...).
A later notebook reads what an earlier one wrote, and makes it itself, with the same recipe,
when the earlier notebook did not run, so that each notebook also runs alone. The method is
:mod:`cellnb.pipeline`; this module only decides where its results live and when they are made.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import mask as _mask
from . import train as _train
from .io import InputError
from .integrate import integrate
from .mask import modality_of
from .pipeline import (_field_relief, _warn_collapse, apply_model, classical_labels,
                       config_channels, field_flood, field_markers, field_patches,
                       train_confident)

__all__ = ["MARKER_SOURCES", "cached_markers", "cached_mask", "cached_model", "cached_labels",
           "baseline_labels", "cached_nucleus_model", "synthetic_markers"]


#: Where the notebooks' markers come from (their ``markers_from`` parameter).
MARKER_SOURCES = ("nucleus", "synthetic", "image", "corrected")


def cached_markers(field, run, source: str = "nucleus"):
    """Markers from the run folder, or computed from the nucleus image (and saved) now.

    Parameters
    ----------
    source : {"nucleus", "synthetic", "image", "corrected"}
        ``"nucleus"``: notebook 01's markers (computed now if missing): from the
        nucleus image, or the field's ``markers.csv`` when it has none;
        ``"synthetic"``: notebook 02's markers from a synthetic nucleus image
        (must exist); ``"image"``: found in the field's phase-contrast image
        (no stain, no clicks; computed now if missing); ``"corrected"``: those
        markers as a user corrected them (notebook 01's
        :class:`~cellnb.widgets.MarkerEditor` saves them; must exist). One run
        folder should use one source throughout.
    """
    from .io import read_markers, write_markers
    if source not in MARKER_SOURCES:
        raise InputError(f"markers_from must be one of {', '.join(map(repr, MARKER_SOURCES))}, "
                         f"got {source!r}.")
    p = run.markers(field.name, source)
    if p.exists():
        return read_markers(p)
    if source == "synthetic":
        raise InputError(f"{field.name}: no synthetic-nucleus markers at {p}; run notebook 02 "
                         "first (or use markers_from: nucleus).")
    if source == "corrected":
        raise InputError(f"{field.name}: no corrected markers at {p}; correct them in notebook "
                         "01's marker editor and press Save, or write them there yourself "
                         "(e.g. napari's points layer, columns axis-0, axis-1), or use "
                         "markers_from: image.")
    m = field_markers(field, source="image" if source == "image" else "auto")
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


def cached_model(field, config: str, run, train_config: _train.TrainConfig | None = None,
                 patch_size: int | None = None, progress: bool = True,
                 markers_from: str = "nucleus", callback=None):
    """The model for (field, channel config): loaded from the run, or trained and saved.

    `callback` is called with each training step's row (step, loss...) when
    it trains (e.g. :class:`cellnb.widgets.LiveLoss`).

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
    m = cached_mask(field, run, chans, mk)
    ps = field_patches(field, chans, mk, m, patch_size)
    relief, flood = _field_relief(field, chans), field_flood(chans)
    # stops when the labels stop changing, as segment does
    res, _, share = train_confident(ps, train_config, progress=progress, channels=chans,
                                    log=lambda s: print(s, flush=True), callback=callback,
                                    mask=m, labels_of=lambda p: integrate(p, ps, mask=m,
                                                                  landscape=relief,
                                                                  **flood))
    _warn_collapse(share, f"{field.name} · {config}")
    _train.save_model(res, path, confident=round(share, 3))
    return _train.load_model(path)


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
        Integration's background rule (:func:`cellnb.pipeline.segment`).

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
    # markers found in a phase-contrast image miss cells: split two-lobed labels
    labels = apply_model(model, meta, field, chans, mk, cached_mask(field, run, chans, mk),
                         threshold, background, split=markers_from == "image")
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


def synthetic_markers(field, model, meta: dict, run, allow_empty: bool = False):
    """:func:`cellnb.pipeline.synthetic_field_markers`, the markers saved to the run folder.

    Written to ``markers/<field>__synthetic.csv``, where notebooks 04-06 read them with
    ``markers_from: synthetic`` (nothing is written when none were found).
    """
    from .io import write_markers
    from .pipeline import synthetic_field_markers
    prob, mk = synthetic_field_markers(field, model, meta, allow_empty=allow_empty)
    if len(mk):
        write_markers(run.markers(field.name, "synthetic"), mk)
    return prob, mk
