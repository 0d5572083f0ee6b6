"""The course's widgets: each one's output changes when its control moves.

The same check runs in a real browser in the notebooks (issue 19); here the
controls are moved programmatically (``ipywidgets.interactive`` re-runs its
function and stores the figures it showed in ``.result``).
"""
import matplotlib
import numpy as np
import pytest

from cellnb import integrate, markers, mask, patches, plot, widgets
from conftest import one_marker_two_cells
from cellnb.model import build_unet

matplotlib.use("Agg")
pytest.importorskip("ipywidgets")


def _move(wid, **values):
    """Set controls by their keyword, as a student's drag does; return the new result."""
    for c in wid.children:
        if getattr(c, "_kwarg", None) in values:
            c.value = values[c._kwarg]
    return wid.result


@pytest.fixture(scope="module")
def field_parts(small_field):
    mk = markers.find_markers(small_field.nucleus)
    img = small_field.images["fluorescence"]
    m = mask.foreground_mask(img, markers=mk)
    ps = patches.extract_patches(small_field.stack(["fluorescence"]), mk, m, size=64)
    return mk, img, m, ps


def test_marker_sigma_redraws_the_markers(small_field):
    w = widgets.marker_sigma(small_field.nucleus, small_field.nuclei, value=1.0)
    before = dict(w.result)
    assert before["f1"] > 0.9
    after = _move(w, sigma=6.0)
    assert after["sigma"] == 6.0 and after["markers"] != before["markers"]
    assert after["f1"] != before["f1"]


def test_smoothness_and_recipe_change_the_mask(small_field, field_parts):
    mk, img, _, _ = field_parts
    w = widgets.smoothness(img, markers=mk, truth=small_field.cells, value=0.0)
    before = dict(w.result)
    after = _move(w, smoothness=20.0)
    assert after["covered"] != before["covered"] and after["iou"] != before["iou"]
    w = widgets.mask_recipe(small_field.images["brightfield"], truth=small_field.cells,
                            markers=mk, value="brightfield")
    right = dict(w.result)
    wrong = _move(w, modality="fluorescence")
    assert wrong["modality"] == "fluorescence" and wrong["iou"] < right["iou"]


def test_loss_weights_rescore_one_fixed_output(field_parts):
    _, _, _, ps = field_parts
    model = build_unet(ps.x.shape[-1], width=8, depth=2, patch=64)
    w = widgets.loss_weights(model, ps, beta=3.0, lam=1.0)
    r0 = dict(w.result)
    assert r0["loss"] == pytest.approx(-r0["area"] + r0["overlap"] + 3.0 * r0["outside"],
                                       rel=1e-5)
    r1 = _move(w, beta=30.0)
    assert r1["area"] == r0["area"]                       # the output itself is fixed
    assert r1["loss"] == pytest.approx(r0["loss"] + 27.0 * r0["outside"], rel=1e-5)
    assert r1["loss"] > r0["loss"]


def test_live_loss_collects_and_draws():
    live = widgets.LiveLoss("t", every=2)
    for s in range(5):
        live({"step": s + 1, "loss": 10.0 - s})
    assert len(live.rows) == 5 and live.out.value[:4] == b"\x89PNG"   # drawn at steps 2, 4


def test_threshold_and_background_change_the_labels(small_field, field_parts):
    mk, img, m, ps = field_parts
    probs = np.zeros(ps.x.shape[:3], np.float32)
    c = ps.size // 2
    yy, xx = np.mgrid[:ps.size, :ps.size]
    probs[:] = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * 8.0 ** 2))   # a blob per marker
    land = integrate.border_landscape(img, "fluorescence")
    w = widgets.threshold(probs, ps, m, land, img, truth=small_field.cells, value=0.5,
                          background="mask")
    in_mask = dict(w.result)
    paper = _move(w, background="threshold")
    assert paper["background"] == "threshold" and paper["mIOU"] != in_mask["mIOU"]
    high = _move(w, threshold=0.95)
    assert high["mIOU"] < paper["mIOU"]


def test_worst_cells_browses_from_the_worst(small_field):
    truth = small_field.cells
    pred = truth.copy()
    pred[pred == 3] = 0               # cell 3 missed: the worst
    w = widgets.worst_cells(small_field.images["fluorescence"], truth, pred)
    assert w.result["rank"] == 0 and w.result["cell"] == 3 and w.result["iou"] == 0.0
    nxt = _move(w, rank=1)
    assert nxt["rank"] == 1 and nxt["iou"] == 1.0


def test_threshold_cuts_two_lobed_labels_as_segment_does_with_markers_found_in_the_image():
    """Markers found in the phase image: the slider's labels are the ones notebook 05 saved."""
    from cellnb import pipeline
    img, m, mk = one_marker_two_cells()
    ps = patches.extract_patches(img[..., None], mk, m, size=64)
    probs = np.full(ps.x.shape[:3], 3e-4, np.float32)      # unsure everywhere: the flood
    land = integrate.border_landscape(img, "phase")
    kw = dict(value=0.5, background="mask", flood=pipeline.field_flood(["phase"]))
    whole = widgets.threshold(probs, ps, m, land, img, **kw).result
    assert whole["cells"] == 2 and whole["split"] == 0
    w = widgets.threshold(probs, ps, m, land, img, split_markers=mk, **kw)
    assert w.result["cells"] == 3 and w.result["split"] == 1 and w.result["joined"] == 0
    assert _move(w, threshold=0.3)["split"] == 1           # it holds as the slider moves


def test_marker_raster_draws_each_marker_on_its_own_pixel(small_field):
    img = small_field.images["fluorescence"]
    mk = np.array([[50.0, 60.0], [100.0, 20.0], [10.0, 150.0]])
    crop = np.s_[40:140, 10:110]
    rgb = plot.marker_raster(img, mk, truth=small_field.cells, crop=crop, added=1)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[10, 50]) == (255, 40, 40)            # the first marker, red, at its pixel
    assert tuple(rgb[60, 10]) == (60, 255, 60)            # added ones green
    assert tuple(rgb[61, 15]) == (60, 255, 60) and tuple(rgb[61, 16]) != (60, 255, 60)
    assert (rgb == (0, 255, 255)).all(-1).any()            # annotated cells outlined
    # a cross of two 3 x 11 bars; the third marker lies outside the crop: nothing drawn
    assert (rgb == (60, 255, 60)).all(-1).sum() == 2 * 33 - 9


def test_marker_editor_deletes_adds_undoes_and_saves(small_field, tmp_path):
    from cellnb import io
    img = small_field.images["fluorescence"]
    found = markers.find_markers(small_field.nucleus)
    out = tmp_path / "markers" / "f__corrected.csv"
    ed = widgets.MarkerEditor(img, found, out, truth=small_field.cells, radius=5,
                              crop=np.s_[0:128, 0:192])
    assert ed.counts == {"markers": len(found), "deleted": 0, "added": 0, "clicks": 0}
    assert "F1" in ed._status.value
    first = ed._img.value
    r, c = found[np.argmax(found[:, 0] < 120)]             # a marker inside the crop
    assert ed.click(r + 3, c - 2) == "deleted"             # within the radius
    assert ed._img.value != first and len(ed.markers) == len(found) - 1
    assert ed.click(150, 20) == "outside"                   # below the crop: nothing changes
    # a click through the browser: ipyevents' position in the image's own pixels, plus the crop
    empty = np.argwhere(small_field.cells[:128] == 0)[0]
    ed._on_event({"type": "click", "dataX": int(empty[1]), "dataY": int(empty[0])})
    assert ed.counts == {"markers": len(found), "deleted": 1, "added": 1, "clicks": 2}
    np.testing.assert_array_equal(ed.markers[-1], empty)
    assert ed.undo() and ed.counts["added"] == 0 and ed.undo() and ed.counts["clicks"] == 0
    assert not ed.undo()
    np.testing.assert_array_equal(ed.markers, found)
    ed.click(r, c)
    ed.click(*empty)
    ed._on_save()
    assert "saved" in ed._status.value
    np.testing.assert_allclose(io.read_markers(out), ed.markers, atol=0.005)   # CSV: 2 decimals
    with pytest.raises(io.InputError, match="one channel|2-D"):
        widgets.MarkerEditor(np.dstack([img, img]), found, out)
    with pytest.raises(io.InputError, match="is a folder"):
        widgets.MarkerEditor(img, found, tmp_path)
    with pytest.raises(io.InputError, match=r"\.csv"):
        widgets.MarkerEditor(img, found, tmp_path / "markers.tif")


def test_corrected_markers_feed_the_notebooks_and_are_asked_for_when_missing(small_field,
                                                                             tmp_path):
    from cellnb import cache, io
    run = io.RunFolder(tmp_path / "run")
    with pytest.raises(io.InputError, match="no corrected markers.*marker editor"):
        cache.cached_markers(small_field, run, "corrected")
    with pytest.raises(io.InputError, match="markers_from must be one of"):
        cache.cached_markers(small_field, run, "clicked")
    mk = np.array([[20.0, 30.0], [90.0, 100.0]])
    io.write_markers(run.markers(small_field.name, "corrected"), mk)
    np.testing.assert_array_equal(cache.cached_markers(small_field, run, "corrected"), mk)
