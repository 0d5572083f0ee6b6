"""Real phase-contrast cells with hand-drawn whole-cell truth.

* A crop of the bundled ``data/real/set13`` (Usiigaci, MIT licence, Tsai et al. 2019; always
  present, so never skipped): the whole method (markers.csv, phase-contrast mask, training,
  integration) against the classical seeded rows on the same markers.
* Every field of ``../shared/data/usiigaci-phase`` (skipped cleanly when absent): the
  transmitted-light mask against the true foreground. The whole-method figures on those fields
  come from ``bench/real_data.py`` (minutes per field), not from a test.

The margins asserted are the ones measured (numbers in each test's docstring), less a small
allowance for the run-to-run spread of a different machine.
"""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cellnb import baseline, datasets, markers, mask, metrics
from cellnb.batch import thread_limits

pytestmark = pytest.mark.slow

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "usiigaci-phase"
SHARED_FIELDS = sorted(p.name for p in SHARED.iterdir() if p.is_dir()) if SHARED.is_dir() else []
STEPS = 100
MASK_FLOOR = 0.66          # measured 0.686, 0.700 since the mask's halo-crest step
OWN_MARGIN = 0.12          # measured +0.175, now +0.185, over the better classical row, own mask
SPLIT_TOLERANCE = 0.02     # measured +0.010, now +0.014 over the nearest split of cellnb's mask
NO_CLICK_MARGIN = 0.102    # CNN AP@0.5 over the best classical row, no clicks, measured on the crop
ONE_CELL = 0.03            # AP@0.5 of the no-click crop when one cell turns from missed into matched


def _marked_truth(f):
    """Ground truth restricted to the cells that have a marker in the crop."""
    rc = np.round(f.markers).astype(int)
    keep = np.unique(f.cells[rc[:, 0], rc[:, 1]])
    return np.where(np.isin(f.cells, keep[keep > 0]), f.cells, 0)


@pytest.fixture(scope="module")
def crop():
    f = datasets.load_field(REAL / "set13").crop(slice(256, 768), slice(256, 768))
    f.cells = _marked_truth(f)
    return f


# The training runs in a fresh process with the default thread counts: bfloat16 training on
# the CPU rounds differently with the number of threads, and in the full slow suite, after a
# batch had left TF_NUM_INTRAOP_THREADS=1 in the environment (fixed in `cellnb.batch`), this
# crop scored 0.571 mIOU against 0.605 (the previous release's relief: 0.579 against 0.603).
# A fresh process gives what a user's `segment` gives, whatever ran before.
THREAD_VARS = tuple(thread_limits(1))
_SEGMENT_CROP = """
import sys
import numpy as np
from cellnb import datasets, pipeline, synthetic_nuclei, train
folder, out, source, steps = sys.argv[1:5]
f = datasets.load_field(folder).crop(slice(256, 768), slice(256, 768))
mk, n_bodies = synthetic_nuclei.self_trained_markers(f.images["phase"], return_parts=True) \
    if source == "image" else (None, 0)
res = pipeline.segment_field(f, ["phase"], markers=mk, split=source == "image",
                             config=train.TrainConfig(max_steps=int(steps)),
                             progress=False, log=lambda s: None)
np.savez(out, labels=res.labels, mask=res.mask, markers=res.markers, n_bodies=n_bodies,
         split=res.split)
"""


def _segment_crop(tmp: Path, source: str) -> SimpleNamespace:
    """`segment_field` on the set13 crop in a fresh Python process: labels, mask, markers."""
    out = tmp / f"crop_{source}.npz"
    # the thread count changes the bfloat16 rounding: the default threads, as a user's run
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    run = subprocess.run([sys.executable, "-c", _SEGMENT_CROP, str(REAL / "set13"), str(out),
                          source, str(STEPS)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(out) as z:
        return SimpleNamespace(**{k: z[k] for k in z.files})


@pytest.fixture(scope="module")
def crop_result(tmp_path_factory):
    return _segment_crop(tmp_path_factory.mktemp("crop"), "clicked")


def test_cnn_beats_the_classical_rows_on_a_real_crop(crop, crop_result):
    """set13 rows/cols 256-768 (40 marked cells), 100 steps, working scale 0.53.

    Measured (mIOU / AP@0.5), this release (borders at full resolution, the split between
    touching cells on the halo line): CNN 0.605 / 0.569 (0.603 / 0.569 with the previous
    release's integration, same outputs); in cellnb's mask (IoU 0.700) the nearest-marker split
    0.591 / 0.509 (with the marked rounded cells' rings, ``mask.halo_rings``: CNN the same,
    mask IoU 0.703, nearest split 0.596 / 0.509; with unclicked objects walled in by their halo
    left out of their neighbours, ``integrate.enclosed_basins``: CNN 0.623 / 0.633; with the
    halo's pockets in the mask, ``mask.halo_pockets``: CNN 0.637 / 0.667, mask IoU 0.703); in the
    classical Otsu mask the seeded watershed 0.395 / 0.143 and the
    nearest split 0.420 / 0.143. Earlier releases: CNN 0.595 / 0.633 at 100 steps, 0.590 /
    0.569 at 200 (a cell or two on either side of IoU 0.5 moves AP@0.5 by 0.03 each on these
    40 cells).
    """
    truth = crop.cells
    cnn = metrics.summarize(truth, crop_result.labels)
    own = baseline.classical_mask(crop.images["phase"], "phase")
    rows = {name: metrics.summarize(truth, lab) for name, lab in {
        "near_cellnb": baseline.nearest_marker(crop_result.mask, crop_result.markers),
        "prop_own": baseline.propagate(crop.stack(["phase"]), own, crop_result.markers),
        "near_own": baseline.nearest_marker(own, crop_result.markers)}.items()}
    assert metrics.mask_iou(crop_result.mask, truth) > MASK_FLOOR
    assert cnn["mIOU"] >= max(rows["prop_own"]["mIOU"], rows["near_own"]["mIOU"]) + OWN_MARGIN, \
        (cnn, rows)
    assert cnn["mIOU"] >= rows["near_cellnb"]["mIOU"] - SPLIT_TOLERANCE, (cnn, rows)
    assert cnn["AP50"] >= rows["near_cellnb"]["AP50"], (cnn, rows)


def test_no_clicks_on_a_real_crop(tmp_path):
    """The same crop without a click: markers from the phase image, scored against ALL its cells.

    Measured (100-step budget): the dark bodies give 29 markers for 47 annotated cells
    (precision 0.93, recall 0.57, F1 0.71; 31 markers, F1 0.72, before one cell's split bodies
    were joined, ``markers.join_split_bodies``); the self-trained detector and the rounded
    cells add 7 (36 markers: precision 0.92, recall 0.70, F1 0.795; 38 and 0.80 before the
    join; 0.76 before the rounded cells). CNN mIOU 0.453 / AP@0.5 0.407 in a fresh process
    (0.469 / 0.393 before the join, 0.464 / 0.417 with the 300-step detector, 0.443 / 0.414
    before the rounded cells, 0.394 / 0.345 with the bodies alone); the classical rows given
    the same detected markers in cellnb's mask: nearest split 0.428 / 0.361, seeded watershed
    0.429 / 0.317. So the CNN is ahead by 0.046 AP@0.5 (0.044 before the join, 0.068 with the
    300-step detector, one cell's worth on this crop; 0.047 before the rounded cells; with the
    bodies alone it was level); asserted: that margin less one cell's worth of AP@0.5
    (:data:`ONE_CELL`). With the bodies' markers inside the crop's edge
    (``markers.body_depth``) and the rounded cells' rings in the mask: 35 markers (F1 0.78),
    CNN 0.440 / 0.390, nearest split 0.430 / 0.344, seeded watershed 0.424 / 0.344: ahead by
    0.046 again. With unmarked objects walled in by their halo left out of their neighbours
    (``integrate.enclosed_basins``): the same 35 markers, CNN 0.442 / 0.439: ahead by 0.095.
    With two-lobed labels split (``integrate.split_lobes``, as ``segment --image``): no label
    of this crop has two lobes, the same figures. With the
    detector's dark bodies left out of its training beyond their centre disk: 35 markers again
    (F1 0.78), CNN 0.444 / 0.439, nearest split 0.435 / 0.344: ahead by 0.095 still. With two
    touching pieces of one cell joined (``integrate.join_cut_cells``, as ``segment --image``):
    CNN 0.458 / 0.473, the classical rows as before: ahead by 0.129 (:data:`NO_CLICK_MARGIN`).
    With touching rounded cells kept apart by their rings (``markers.ROUNDED_APART``): the same
    35 markers and figures (measured in a fresh process). With the halo's pockets in the mask
    (``mask.halo_pockets``): the same 35 markers, CNN 0.459 / 0.446 (a cell below IoU 0.5 now),
    the classical rows as before: ahead by 0.102 (:data:`NO_CLICK_MARGIN`; 0.129 before).
    """
    f = datasets.load_field(REAL / "set13").crop(slice(256, 768), slice(256, 768))
    res = _segment_crop(tmp_path, "image")
    n_bodies = int(res.n_bodies)
    # the markers found in the image; after them, those of cells split off two-lobed labels
    detected = res.markers[:len(res.markers) - int(res.split)]
    # the bodies' markers come first and need no training: the same in any process
    assert np.array_equal(res.markers[:n_bodies], markers.phase_markers(f.images["phase"]))
    bodies = metrics.marker_scores(res.markers[:n_bodies], f.cells, tolerance=3)
    found = metrics.marker_scores(detected, f.cells, tolerance=3)
    assert bodies["f1"] > 0.65 and bodies["precision"] > 0.8, bodies
    assert found["tp"] > bodies["tp"] and found["f1"] > bodies["f1"], (bodies, found)
    # measured 0.78 (0.80 before markers.body_depth: one detection fewer; 0.76 before rounded cells)
    assert found["f1"] > 0.75, found
    cnn = metrics.summarize(f.cells, res.labels)
    rows = [metrics.summarize(f.cells, lab) for lab in (
        baseline.nearest_marker(res.mask, detected),
        baseline.propagate(f.stack(["phase"]), res.mask, detected))]
    assert cnn["AP50"] >= max(r["AP50"] for r in rows) + NO_CLICK_MARGIN - ONE_CELL, (cnn, rows)
    assert cnn["mIOU"] >= max(r["mIOU"] for r in rows) - SPLIT_TOLERANCE, (cnn, rows)
    assert cnn["AP50"] > 0.38 and cnn["mIOU"] > 0.43, cnn


@pytest.mark.skipif(not SHARED_FIELDS, reason=f"no Usiigaci fields in {SHARED}")
def test_phase_contrast_mask_on_every_shared_field():
    """Mask IoU against the hand-drawn foreground on every shared field.

    Measured on the 12 fields with the border on the halo's crest and the marker reach
    (issue 20): the large and medium cells (sets 1-20, 14-26% of the field covered)
    0.55-0.72, the sparse thin-cell fields (sets 30-40, 5-8% covered) 0.59-0.73: set30 0.59,
    set31 0.73, set33 0.62, set34 0.67, set40 0.60; mean 0.664; with the halo basins of marked
    cells the texture missed (issue 20, a later stop) mean 0.671 (sets 1-20 0.57-0.72, set33
    0.64, the other sparse fields unchanged); with the halo's pockets on the crowded fields
    (``mask.halo_pockets``, a later session) mean 0.679 (sets 1-20 0.56-0.75). Before the crest
    and the reach:
    0.25-0.72, mean 0.609 (set40 0.25: a debris band joined to one cell); before the
    phase-contrast recipe, the bright-field forest: 0.30-0.47 on the first 8, mean 0.40.
    """
    ious = {}
    for name in SHARED_FIELDS:
        f = datasets.load_field(SHARED / name)
        m = mask.foreground_mask(f.images["phase"], "phase", markers=f.markers)
        ious[name] = metrics.mask_iou(m, f.cells)
    assert min(ious.values()) > 0.53, ious
    assert np.mean(list(ious.values())) > 0.65, ious


def test_phase_markers_find_the_annotated_cells():
    """Markers from the phase image alone (no clicks) against the annotated cells.

    Measured (`markers.phase_markers` defaults, tolerance 3 px): bundled set1 F1 0.83, set13 0.82;
    on the 12 shared fields mean F1 0.796 (precision 0.84, recall 0.77), lowest set30 0.69
    (0.794 before the bodies kept clear of the insert walls of set30 and set40).
    With `markers.rounded_cells` added to the bodies (defaults): set1 0.86, set13 0.86; shared
    mean 0.830, up on 11 of the 12 fields and level on set3. With one cell's split bodies
    joined (`markers.join_split_bodies`): bodies shared mean 0.806 (set1 0.87, set13 0.80);
    with a body cut by the image edge marked inside it (`markers.body_depth`): 0.812 (set1
    0.885, set13 0.80; with the rounded cells 0.91 and 0.84).
    """
    f1, rounded, walls = {}, {}, set()
    fields = [REAL / n for n in ("set1", "set13")] + [SHARED / n for n in SHARED_FIELDS]
    for path in fields:
        f = datasets.load_field(path)
        body, bodies = markers.phase_markers(f.images["phase"], return_bodies=True)
        found = np.vstack([body, markers.rounded_cells(f.images["phase"], body)])
        f1[path.name], rounded[path.name] = (metrics.marker_scores(m, f.cells, tolerance=3)["f1"]
                                             for m in (body, found))
        radius = np.sqrt(np.median(np.bincount(bodies.ravel())[1:]) / np.pi)
        near = markers.long_dark_structures(f.images["phase"], radius)
        if near.any():
            walls.add(path.name)
            assert not near[body[:, 0].astype(int), body[:, 1].astype(int)].any()
    # the culture insert's wall along the edge of set30 and set40, and nothing else
    assert walls == {"set30", "set40"} & set(SHARED_FIELDS), walls
    if "set40" in f1:
        assert f1["set40"] > 0.75, f1        # 0.727 with the bodies along the wall
    assert f1["set1"] > 0.78 and f1["set13"] > 0.78, f1
    assert rounded["set1"] > 0.84 and rounded["set13"] > 0.84, rounded
    if SHARED_FIELDS:
        shared = [f1[n] for n in SHARED_FIELDS]
        assert np.mean(shared) > 0.77 and min(shared) > 0.65, f1
        assert np.mean([rounded[n] for n in SHARED_FIELDS]) > np.mean(shared) + 0.02, rounded
