"""The course's knobs: one ipywidgets control per choice a notebook teaches.

Each function returns an ``ipywidgets.interactive`` (display it as the last
expression of a cell) whose figure is an Image widget. Moving the control
redraws the figure and sets the
widget's ``.result`` to a small dict of the figures shown (markers and F1,
IoU, number of cells...), so a test, or a student, can read what changed.
Everything that does not depend on the control is computed once, when the
widget is made; moving it re-runs only the cheap step.

Headless runs (papermill, ``interactive: false``) never build these: every
control has a plain parameter in the notebook's ``parameters`` cell.

========================  =======  ==============================================
widget                    notebook what moves
========================  =======  ==============================================
:func:`marker_sigma`      01       denoising sigma -> markers redrawn, F1
:func:`smoothness`        03       graph-cut smoothness -> mask, IoU
:func:`mask_recipe`       03       modality recipe of a channel -> mask, IoU
:func:`loss_weights`      04       beta, lambda -> Eq. 1 re-scored on one output
:class:`LiveLoss`         04       (not a control) loss curve drawn while training
:func:`threshold`         05       threshold, background rule -> labels, mIOU
:func:`worst_cells`       06       rank of a badly segmented cell -> its crop, IoU
:class:`MarkerEditor`     01       a click on the image -> a marker deleted or added
========================  =======  ==============================================

:class:`MarkerEditor` is not an ``interactive``: a click on its image (via
ipyevents) deletes or adds a marker, and *Save* writes the corrected markers.
"""
from __future__ import annotations

import numpy as np

__all__ = ["marker_sigma", "smoothness", "mask_recipe", "loss_weights", "LiveLoss",
           "threshold", "worst_cells", "MarkerEditor"]


def _png(fig) -> bytes:
    import io
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _interactive(draw, **controls):
    """``ipywidgets.interactive`` whose figure lives in an Image widget.

    `draw(**values)` returns ``(figure, result)``. The figure is sent as PNG
    bytes in the Image widget's state, not captured as cell output: it shows
    in JupyterLab from the first draw on (an Output widget can miss output
    made before its view exists), and it is kept in saved widget state.
    """
    import ipywidgets as w
    img = w.Image(format="png")

    def run(**values):
        fig, result = draw(**values)
        img.value = _png(fig)
        return result

    wid = w.interactive(run, **controls)
    wid.children = (*wid.children[:-1], img, wid.children[-1])
    return wid


def marker_sigma(nucleus, nuclei=None, crop=None, value: float = 1.0):
    """Slider for the nucleus image's denoising sigma (notebook 01).

    Parameters
    ----------
    nucleus : ndarray, shape (H, W)
    nuclei : ndarray of int, shape (H, W), optional
        True nuclei: the title and ``.result`` give precision / recall / F1.
    crop : tuple of slices, optional
    value : float
        Starting sigma (px).

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"sigma", "markers", "f1"}`` (``f1`` None without truth).
    """
    import ipywidgets as w
    from . import markers as _markers, metrics, plot

    def draw(sigma):
        m = _markers.find_markers(nucleus, sigma=sigma)
        s = metrics.marker_scores(m, nuclei) if nuclei is not None else None
        title = f"sigma {sigma:.1f}: {len(m)} markers" + (
            f", precision {s['precision']:.2f}, recall {s['recall']:.2f}, F1 {s['f1']:.3f}"
            if s else "")
        fig = plot.show_markers(nucleus, m, truth=nuclei, crop=crop, title=title)
        return fig, {"sigma": sigma, "markers": len(m), "f1": s["f1"] if s else None}

    return _interactive(draw, sigma=w.FloatSlider(value=value, min=0.0, max=6.0, step=0.5,
                                                  continuous_update=False))


def smoothness(image, modality: str = "fluorescence", markers=None, truth=None, crop=None,
               value: float = 3.0):
    """Slider for the graph-cut smoothness (notebook 03).

    The data term is computed once; moving the slider re-runs only the cut.

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"smoothness", "covered", "iou"}`` (share of the field
        in the mask; IoU None without `truth`).
    """
    import ipywidgets as w
    from . import mask as _mask, plot
    from .metrics import mask_iou
    _, prob = _mask.foreground_mask(image, modality, markers=markers, return_probability=True)

    def draw(smoothness):
        m = _mask.graph_cut(prob, smoothness)
        iou = mask_iou(m, truth) if truth is not None else None
        fig = plot.show_mask(image, m, None, truth, crop, f"smoothness {smoothness:.1f}" + (
            f", IoU vs truth {iou:.3f}" if iou is not None else ""))
        return fig, {"smoothness": smoothness, "covered": float(m.mean()), "iou": iou}

    return _interactive(draw, smoothness=w.FloatSlider(
        value=value, min=0.0, max=20.0, step=0.5, continuous_update=False))


def mask_recipe(image, truth=None, markers=None, crop=None, value: str = "fluorescence"):
    """Drop-down of the mask recipe a channel is read with (notebook 03).

    Shows what goes wrong when a channel is masked with the wrong modality's
    recipe (e.g. a bright-field image read as fluorescence). Each recipe's
    mask is computed the first time it is chosen and kept.

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"modality", "covered", "iou"}``.
    """
    import ipywidgets as w
    from . import mask as _mask, plot
    from .metrics import mask_iou
    done = {}

    def draw(modality):
        if modality not in done:
            done[modality] = _mask.foreground_mask(image, modality, markers=markers)
        m = done[modality]
        iou = mask_iou(m, truth) if truth is not None else None
        fig = plot.show_mask(image, m, None, truth, crop, f"recipe: {modality}" + (
            f", IoU vs truth {iou:.3f}" if iou is not None else ""))
        return fig, {"modality": modality, "covered": float(m.mean()), "iou": iou}

    return _interactive(draw, modality=w.Dropdown(options=list(_mask.MODALITIES), value=value))


def _area_terms(model, patches, area: int = 640):
    """Eq. 1's three sums (per patch) for the network's output on the most crowded area."""
    from .loss import eq1_loss
    from .patches import area_batches
    from .train import batch_arrays
    idx = max(area_batches(patches, area), key=len)
    canvas = area + 2 * patches.pad + patches.size
    x, outside, index, weight = batch_arrays(patches, idx, canvas, 1)
    logits = np.asarray(model.predict(x, verbose=0)[..., 0], np.float32)
    _, terms = eq1_loss(logits, outside, index, canvas * canvas, weight, 1.0, 1.0)
    return {k: float(np.asarray(v)) for k, v in terms.items()}, len(idx)


def loss_weights(model, patches, area: int = 640, beta: float = 3.0, lam: float = 1.0):
    """Sliders for Eq. 1's weights, re-scoring one fixed network output (notebook 04).

    The trained network's output on the most crowded area is fixed; its three
    sums (area covered, overlap, outside the mask; per patch) are computed
    once, and the sliders show how beta and lambda weigh them into the loss
    the training minimised: ``L = -area + lambda * overlap + beta * outside``.

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"beta", "lambda", "loss", "area", "overlap", "outside"}``.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    terms, n = _area_terms(model, patches, area)

    def draw(beta, lam):
        parts = {"- area": -terms["area"], "+ lambda x overlap": lam * terms["overlap"],
                 "+ beta x outside": beta * terms["outside"]}
        total = sum(parts.values())
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(list(parts), list(parts.values()), color=["C2", "C1", "C3"])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("per patch")
        ax.set_title(f"Eq. 1 on {n} patches of one area: loss {total:.1f} "
                     f"(beta {beta:g}, lambda {lam:g})")
        fig.tight_layout()
        return fig, {"beta": beta, "lambda": lam, "loss": total, **terms}

    return _interactive(
        draw, beta=w.FloatSlider(value=beta, min=0.0, max=30.0, step=1.0,
                                 continuous_update=False),
        lam=w.FloatSlider(value=lam, min=0.0, max=5.0, step=0.25, description="lambda",
                          continuous_update=False))


class LiveLoss:
    """A training callback that redraws the loss curve while the network trains (notebook 04).

    Pass it as ``callback`` to the training (:func:`cellnb.cache.cached_model`,
    :func:`cellnb.train.train`); display ``.out`` before. It redraws every
    `every` steps, so a long training is never a frozen cell.

    Parameters
    ----------
    title : str
    every : int
        Steps between redraws.
    """

    def __init__(self, title: str = "training", every: int = 10):
        import ipywidgets as w
        self.title, self.every, self.rows = title, int(every), []
        self.out = w.Image(format="png")      # updated in place: never a stale cell output

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) % self.every:
            return
        import matplotlib.pyplot as plt
        from .plot import loss_curve
        fig, ax = plt.subplots(figsize=(6, 3))
        loss_curve({self.title: self.rows}, ax=ax)
        ax.set_title(f"{self.title}: step {self.rows[-1]['step']}, "
                     f"loss {self.rows[-1]['loss']:.1f}")
        self.out.value = _png(fig)


def threshold(probs, patches, mask, landscape, image, truth=None, zoom=None,
              value: float = 0.5, background: str = "mask", flood: dict | None = None,
              split_markers=None, modality: str = "phase"):
    """Slider for the network's threshold and a choice of background rule (notebook 05).

    Parameters
    ----------
    probs, patches, mask, landscape
        As :func:`cellnb.integrate.integrate` takes them.
    image : ndarray, shape (H, W)
        Drawn under the labels.
    truth : ndarray of int, shape (H, W), optional
        Ground-truth cells, for the mIOU in the title.
    zoom : (slice, slice), optional
        Region of the zoomed panel.
    value : float
        Starting threshold.
    background : {"mask", "threshold"}
        Starting rule.
    flood : dict, optional
        :func:`cellnb.integrate.integrate`'s image-specific flood settings
        (`band`, `enclosed`), as segment uses them
        (:func:`cellnb.pipeline.field_flood`); default none.
    split_markers : ndarray, shape (N, 2), optional
        The labels' markers, given when they were found in the phase image
        (``markers_from = "image"``): then the ``mask`` rule also cuts a
        label shaped like two cells in two and, when `image` is phase
        contrast, joins two pieces of one cell
        (:func:`cellnb.pipeline.repair_found_markers`), as
        :func:`cellnb.pipeline.segment` and the saved label images do, so
        the slider starts from the labels notebook 05 wrote.
    modality : str
        The modality of `image` (:func:`cellnb.mask.modality_of`).

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"threshold", "background", "cells", "split", "joined", "mIOU"}``
        (``split``: labels cut in two, ``joined``: pieces joined; mIOU None without `truth`).
    """
    import ipywidgets as w
    from . import integrate as _integrate, metrics, plot
    from .pipeline import join_darkness, repair_found_markers
    # the image does not change while the slider moves: its darkness is computed once
    dark = join_darkness(image, [modality]) if split_markers is not None else None

    def draw(threshold, background):
        lab = _integrate.integrate(probs, patches, threshold,
                                   **({"mask": mask, "landscape": landscape, **(flood or {})}
                                      if background == "mask" else {}))
        cut = joined = 0
        if split_markers is not None and background == "mask":
            lab, added, joined = repair_found_markers(lab, landscape, split_markers, dark)
            cut = len(added)
        n = int(len(np.unique(lab[lab > 0])))
        miou = metrics.matched_iou(truth, lab)["mean"] if truth is not None else None
        fig = plot.label_overlay(image, lab, truth=truth, zoom=zoom,
                                 title=f"{background} rule, threshold {threshold:.2f}: {n} cells"
                                 + (f" ({cut} split)" if cut else "")
                                 + (f" ({joined} joined)" if joined else "")
                                 + (f", mIOU {miou:.3f}" if miou is not None else ""))
        return fig, {"threshold": threshold, "background": background, "cells": n,
                     "split": cut, "joined": joined, "mIOU": miou}

    return _interactive(
        draw, threshold=w.FloatSlider(value=value, min=0.05, max=0.95, step=0.05,
                                      continuous_update=False),
        background=w.Dropdown(options=["mask", "threshold"], value=background))


def worst_cells(image, truth, pred, margin: int = 12):
    """Browse the true cells from the worst segmented up (notebook 06).

    Rank 0 is the true cell with the lowest IoU against its best-matching
    prediction: its crop, with the truth (cyan) and every prediction
    (yellow) outlined.

    Returns
    -------
    ipywidgets.interactive
        ``.result``: ``{"rank", "cell", "iou"}``.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries
    from . import metrics
    from .plot import _gray
    m = metrics.matched_iou(truth, pred)
    order = np.argsort(m["per_cell"], kind="stable")
    img = _gray(image)

    def draw(rank):
        cid = int(m["truth_ids"][order[rank]])
        iou = float(m["per_cell"][order[rank]])
        rr, cc = np.nonzero(truth == cid)
        sl = (slice(max(rr.min() - margin, 0), rr.max() + margin + 1),
              slice(max(cc.min() - margin, 0), cc.max() + margin + 1))
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(img[sl], cmap="gray")
        ax.contour(truth[sl] == cid, [0.5], colors="cyan", linewidths=1.2)
        ax.contour(find_boundaries(pred[sl]), [0.5], colors="yellow", linewidths=0.8)
        ax.set_title(f"rank {rank}: cell {cid}, IoU {iou:.2f}")
        ax.axis("off")
        return fig, {"rank": rank, "cell": cid, "iou": iou}

    return _interactive(draw, rank=w.IntSlider(value=0, min=0, max=len(order) - 1,
                                                continuous_update=False))


class MarkerEditor:
    """Correct markers by clicking on the image, in JupyterLab (notebook 01).

    The browser's answer to napari for *correct rather than click*: a click
    within `radius` px of a marker deletes it, a click anywhere else adds one
    there; *Undo* takes the last click back, *Save* writes the markers to
    `path` (cellnb's CSV layout, atomically), where ``segment --markers`` and
    the notebooks' ``markers_from = "corrected"`` read them. The image is
    drawn pixel for pixel (:func:`cellnb.plot.marker_raster`): the given
    markers as red crosses, the added ones in green, annotated cells in cyan
    when `truth` is given (then the status line scores the markers against
    them, and counts the clicks still needed, :func:`cellnb.metrics.corrected_markers`).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The cell image (phase contrast).
    markers : array_like, shape (N, 2)
        The markers to correct, (row, col), e.g. found in the image.
    path : path-like
        Where *Save* writes (in the run folder; never an input file).
    truth : ndarray of int, shape (H, W), optional
        Annotated cells (teaching: how far the correction has come).
    crop : tuple of slice, optional
        The region shown and edited (markers elsewhere are kept as they are).
    radius : float
        A click this close to a marker deletes it, px.

    Attributes
    ----------
    widget : ipywidgets.VBox
        Display it (CSS class ``cellnb-marker-editor``).
    """

    def __init__(self, image, markers, path, truth=None, crop=None, radius: float = 6.0):
        from pathlib import Path
        from .io import InputError, check_image, check_markers
        self.image = check_image(image, name="MarkerEditor image", allow_channels=False)
        # no markers at all is a start too: then every cell is clicked
        given = (np.zeros((0, 2)) if np.size(markers) == 0 else
                 check_markers(markers, shape=self.image.shape, name="MarkerEditor markers"))
        if not radius > 0:
            raise InputError(f"MarkerEditor: radius must be > 0 px, got {radius}.")
        if truth is not None and np.shape(truth) != self.image.shape:
            raise InputError(f"MarkerEditor: truth {np.shape(truth)} and image "
                             f"{self.image.shape} differ in shape; give the field's own cells.")
        from .validate import check_outputs
        check_outputs({"MarkerEditor path": (path, (".csv",))})   # a writable .csv, no folder
        self.path = Path(path)
        self.truth, self.radius = truth, float(radius)
        self.crop = crop or np.s_[:, :]
        h, w = self.image.shape
        self._rows = self.crop[0].indices(h)[:2]      # the crop's [start, stop) in the image
        self._cols = self.crop[1].indices(w)[:2]
        # one row per marker: (row, col, added by hand?); the given ones first
        self._pts = [(float(r), float(c), False) for r, c in given]
        self._n_given = len(self._pts)
        self._undo: list[list] = []
        self._saved: str | None = None        # what the last Save did, shown once
        self._build()

    @property
    def markers(self) -> np.ndarray:
        """The markers now, (N, 2) float64: the given ones kept, then the added ones."""
        pts = sorted(self._pts, key=lambda p: p[2])          # stable: order within each kept
        return np.array([p[:2] for p in pts], dtype=np.float64).reshape(-1, 2)

    @property
    def counts(self) -> dict:
        """``markers``, ``deleted`` (of the given ones), ``added`` and ``clicks`` (their sum)."""
        added = sum(p[2] for p in self._pts)
        deleted = self._n_given - (len(self._pts) - added)
        return {"markers": len(self._pts), "deleted": deleted, "added": added,
                "clicks": deleted + added}

    def click(self, row: float, col: float) -> str:
        """Delete the marker within `radius` of (row, col), or add one there.

        Returns ``"deleted"``, ``"added"`` or ``"outside"`` (off the image or
        the crop: nothing changes).
        """
        if not (self._rows[0] <= row < self._rows[1] and self._cols[0] <= col < self._cols[1]):
            return "outside"
        self._undo.append(list(self._pts))
        if self._pts:
            d = np.hypot(*(np.array([p[:2] for p in self._pts]) - [row, col]).T)
            k = int(np.argmin(d))
            if d[k] <= self.radius:
                del self._pts[k]
                self._redraw()
                return "deleted"
        self._pts.append((float(row), float(col), True))
        self._redraw()
        return "added"

    def undo(self) -> bool:
        """Take the last click back; False when there is none."""
        if not self._undo:
            return False
        self._pts = self._undo.pop()
        self._redraw()
        return True

    def save(self):
        """Write the markers to :attr:`path` (cellnb's layout, atomically); return the path."""
        from .io import write_markers
        return write_markers(self.path, self.markers)

    # --- the widget -------------------------------------------------------------------
    def _build(self):
        import ipywidgets as w
        from ipyevents import Event
        self._img = w.Image(format="png")
        self._status = w.HTML()
        undo, save = w.Button(description="Undo"), w.Button(description="Save",
                                                           button_style="success")
        undo.on_click(lambda _: self.undo())
        save.on_click(lambda _: self._on_save())
        self.widget = w.VBox([self._status, self._img, w.HBox([undo, save])])
        self.widget.add_class("cellnb-marker-editor")
        # ipyevents gives a click's position in the image's own pixels (dataX, dataY),
        # whatever size the browser shows it at
        self._events = Event(source=self._img, watched_events=["click"])
        self._events.on_dom_event(self._on_event)
        self._redraw()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "click" and "dataX" in event:
            self.click(event["dataY"] + self._rows[0], event["dataX"] + self._cols[0])

    def _on_save(self) -> None:
        from .io import InputError
        try:
            self._saved = f"saved {len(self._pts)} markers to {self.save()}"
        except (InputError, OSError) as e:
            self._saved = f"not saved: {e}"
        self._redraw()

    def _redraw(self) -> None:
        import io
        import matplotlib.image
        from . import metrics
        from .plot import marker_raster
        m = self.markers
        n = self.counts
        rgb = marker_raster(self.image, m, truth=self.truth, crop=self.crop,
                            added=len(m) - n["added"])
        buf = io.BytesIO()
        matplotlib.image.imsave(buf, rgb, format="png")
        self._img.value = buf.getvalue()
        # pixel for pixel where the notebook is wide enough, scaled down to fit otherwise
        self._img.layout.width, self._img.layout.max_width = f"{rgb.shape[1]}px", "100%"
        text = (f"<b>{n['markers']} markers</b>: {n['deleted']} deleted, {n['added']} added "
                f"({n['clicks']} click{'' if n['clicks'] == 1 else 's'}). Click a marker to "
                "delete it, a cell without one to add one (in the middle of its widest part).")
        if self.truth is not None and len(m):
            s = metrics.marker_scores(m, self.truth, tolerance=3)
            left = metrics.corrected_markers(m, self.truth)[1]["clicks"]
            text += (f"<br>Against the annotated cells: precision {s['precision']:.2f}, recall "
                     f"{s['recall']:.2f}, F1 {s['f1']:.2f}; {left} clicks would make them right.")
        if self._saved:
            text += f"<br>{self._saved}"
            self._saved = None
        self._status.value = text
