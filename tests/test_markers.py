import numpy as np
import pytest
from skimage.draw import disk

from cellnb import markers, metrics
from conftest import ROUNDED, rounded_field
from cellnb.io import InputError
from cellnb.mask import phase_darkness


def test_marker_f1_on_demo_fields(demo_fields):
    for f in demo_fields:
        m = markers.find_markers(f.nucleus)
        s = metrics.marker_scores(m, f.nuclei)
        assert s["f1"] >= 0.95, (f.name, s)
        assert s["precision"] >= 0.97, (f.name, s)


def test_touching_nuclei_are_split():
    img = np.zeros((80, 80))
    img[disk((40, 30), 10)] = 1
    img[disk((40, 47), 10)] = 1  # overlapping discs: one blob, two nuclei
    img[disk((15, 15), 6)] = 0.5  # a dimmer, isolated nucleus
    img += np.random.default_rng(0).normal(0, 0.02, img.shape)
    m = markers.find_markers(img)
    assert len(m) == 3
    m = m[np.argsort(m[:, 1])]
    assert np.allclose(m[0], [15, 15], atol=1.5)
    assert abs(m[1, 1] - 30) < 4 and abs(m[2, 1] - 47) < 4


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((50, 50)), "constant"),
    (np.full((50, 50), np.nan), "NaN"),
    (np.ones((50, 50, 3)) * np.arange(3), "3 channels"),
])
def test_bad_nucleus_image(bad, msg):
    if bad.ndim == 3:
        bad = bad + np.random.default_rng(0).random(bad.shape)
    with pytest.raises(InputError, match=msg):
        markers.find_markers(bad)


def test_bad_sigma():
    with pytest.raises(InputError, match="sigma"):
        markers.find_markers(np.random.default_rng(0).random((50, 50)), sigma=-1)


def test_detect_blobs_on_probability_image():
    p = np.zeros((60, 60), np.float32)
    p[disk((20, 20), 6)] = 0.9
    p[disk((40, 42), 6)] = 0.8
    m = markers.detect_blobs(p, radius=6, threshold=0.3)
    assert len(m) == 2
    s = metrics.marker_scores(m, (p > 0).astype(int) * 1)
    assert s["tp"] == 1  # both blobs are one label here: the second marker is an over-split
    assert s["fp"] == 1


def _phase_like(rng, bodies, debris=(), shape=(160, 160)):
    """Flat grey background, dark elliptic bodies with a bright halo, optional small dark specks."""
    from skimage.draw import ellipse
    img = np.full(shape, 0.5)
    for (r, c, a, b) in bodies:
        halo = ellipse(r, c, a + 3, b + 3, shape=shape)
        img[halo] = 0.75
        inner = ellipse(r, c, a, b, shape=shape)
        img[inner] = 0.2 + rng.normal(0, 0.05, len(inner[0]))    # textured, as real cells are
    for (r, c) in debris:
        img[disk((r, c), 3, shape=shape)] = 0.1
    return img + rng.normal(0, 0.01, shape)


def test_phase_markers_one_per_body_and_no_debris():
    rng = np.random.default_rng(0)
    bodies = [(40, 40, 14, 9), (40, 110, 9, 18), (115, 60, 12, 12), (120, 125, 16, 8)]
    img = _phase_like(rng, bodies, debris=[(80, 140), (140, 20)])
    m = markers.phase_markers(img)
    assert len(m) == len(bodies)
    truth = np.zeros(img.shape, int)
    from skimage.draw import ellipse
    for k, (r, c, a, b) in enumerate(bodies, 1):
        truth[ellipse(r, c, a, b, shape=img.shape)] = k
    s = metrics.marker_scores(m, truth, tolerance=0)
    assert s["tp"] == len(bodies) and s["fp"] == 0, s
    # each marker on its body's central ridge (the deepest points), not at the rim
    for r, c, a, b in bodies:
        assert np.min(np.hypot(m[:, 0] - r, m[:, 1] - c)) <= abs(a - b) / 2 + 1.5


def test_a_body_cut_by_the_image_edge_has_its_marker_inside():
    """The deepest point of a body the edge cuts lies inside the image, not on the edge."""
    rng = np.random.default_rng(1)
    bodies = [(0, 60, 14, 14), (80, 159, 12, 20), (90, 60, 12, 12)]   # cut at the top, right
    img = _phase_like(rng, bodies)
    m = markers.phase_markers(img, min_area=100)
    assert len(m) == 3
    top = m[np.argmin(m[:, 0])]
    right = m[np.argmax(m[:, 1])]
    assert 4 <= top[0] <= 10 and abs(top[1] - 60) <= 3      # ~ half the body's 14 px depth
    assert 150 <= right[1] <= 155                            # ~ half its 12 px depth
    depth = markers.body_depth(np.ones((5, 7), bool))
    assert depth[0].max() == 1 and depth[2, 3] == 3         # the image's outside is outside


@pytest.mark.parametrize("bad,kw,msg", [
    (0.5 + np.random.default_rng(2).normal(0, 0.01, (60, 60)), {}, "no cell body"),
    (np.full((60, 60), 0.5), {}, "constant"),
    (np.full((60, 60), np.nan), {}, "NaN"),
    (None, {"low": 8, "high": 4}, "low <= high"),
    (None, {"min_area": 0}, "min_area"),
])
def test_phase_markers_bad_input(bad, kw, msg):
    img = _phase_like(np.random.default_rng(1), [(30, 30, 10, 10)], shape=(60, 60)) \
        if bad is None else bad
    with pytest.raises(InputError, match=msg):
        markers.phase_markers(img, **kw)


def test_phase_image_places_its_own_markers(tmp_path, capsys):
    """No nucleus, no clicks: `segment` and `cellnb markers --phase` find the bodies."""
    import tifffile
    from cellnb import pipeline, train
    from cellnb.__main__ import main
    bodies = [(40, 40, 14, 9), (40, 110, 9, 18), (115, 60, 12, 12), (120, 125, 16, 8)]
    img = _phase_like(np.random.default_rng(3), bodies).astype(np.float32)
    from skimage.draw import ellipse
    truth = np.zeros(img.shape, bool)
    for r, c, a, b in bodies:
        truth[ellipse(r, c, a, b, shape=img.shape)] = True
    # the mask given, so that this checks where the markers come from, not the mask
    res = pipeline.segment(img, "phase", mask=truth, config=train.TrainConfig(max_steps=2),
                           progress=False, log=lambda s: None)
    assert len(res.markers) == len(bodies)
    assert len(np.unique(res.labels[res.labels > 0])) == len(bodies)
    with pytest.raises(InputError, match="only a phase-contrast image"):
        pipeline.segment(img, "fluorescence", config=train.TrainConfig(max_steps=2),
                         progress=False, log=lambda s: None)
    tifffile.imwrite(tmp_path / "phase.tif", img)
    assert main(["markers", "--phase", str(tmp_path / "phase.tif"),
                 "--out", str(tmp_path / "m.csv")]) == 0
    from cellnb.io import read_markers
    np.testing.assert_allclose(read_markers(tmp_path / "m.csv"), markers.phase_markers(img))
    tifffile.imwrite(tmp_path / "cells.tif", img)        # named as fluorescence
    assert main(["segment", "--image", str(tmp_path / "cells.tif"),
                 "--out", str(tmp_path / "l.tif")]) == 2
    assert "only a phase-contrast --image" in capsys.readouterr().err


def test_rounded_cells_are_thick_bright_rings_round_a_dark_centre():
    """A rounded cell (bright ring, dark centre) is found; a bright ring round bare background,
    a dark spot in a bright area, a flat cell's thin halo and a rounded cell already marked
    are not."""
    img = rounded_field()                                # rounded cells at ROUNDED
    rounded = ROUNDED
    body = markers.phase_markers(img)
    assert len(body) == 1 and np.hypot(*(body[0] - [115, 50])) < 5   # no body in a rounded cell
    found = markers.rounded_cells(img, body)
    np.testing.assert_allclose(found, rounded, atol=1.0)
    # a marker already near one: only the other is added, as far from every marker as `spacing`
    again = markers.rounded_cells(img, np.vstack([body, [[118, 127]]]))
    np.testing.assert_allclose(again, rounded[:1], atol=1.0)
    assert len(markers.rounded_cells(img, spacing=200, apart=None)) == 1   # the second too close
    # ... unless the other's thick ring (45 noise sd here) lies between them
    assert len(markers.rounded_cells(img, spacing=200, apart=40)) == 2
    assert len(markers.rounded_cells(img, centre=0.5)) == 3          # the gap, if bare is allowed
    assert len(markers.rounded_cells(img, fade=1e9)) == 3            # the spot, if no fade


def test_rounded_cells_touching_pair_keeps_both_but_not_a_marker_inside():
    """Two rounded cells just divided (rings touching, centres 26 px apart, closer than the
    spacing): the rings between the two centres make the second a cell of its own; a marker
    inside a candidate's ring, or a line without a ring on it, still takes the candidate."""
    img = np.full((100, 130), 0.5)
    for rc in [(50, 50), (50, 76)]:
        img[disk(rc, 13)] = 1.4                          # thick, very bright rings
    for rc in [(50, 50), (50, 76)]:
        img[disk(rc, 6)] = 0.35
    img += np.random.default_rng(0).normal(0, 0.01, img.shape)
    level = -phase_darkness(img)
    assert level[50, 63] > markers.ROUNDED_APART             # the rings between the centres
    both = markers.rounded_cells(img, spacing=40)
    assert len(both) == 2
    np.testing.assert_allclose(sorted(both.tolist()), [[50, 50], [50, 76]], atol=1.0)
    assert len(markers.rounded_cells(img, spacing=40, apart=None)) == 1
    # a marker in the first cell's ring: the first is that marker's, the second still its own
    one = markers.rounded_cells(img, np.array([[50.0, 41.0]]), spacing=40)
    np.testing.assert_allclose(one, [[50, 76]], atol=1.0)
    # a brighter bound than the rings: the pair is taken for one cell again
    assert len(markers.rounded_cells(img, spacing=40, apart=1e4)) == 1
    with pytest.raises(InputError, match="apart"):
        markers.rounded_cells(img, apart=float("nan"))


def test_rounded_cell_areas_are_the_whole_ring_of_each_rounded_cell():
    """The areas a person draws for the rounded cells: centre and thick ring, nothing round it;
    the same cells, in the same order, as rounded_cells finds without markers."""
    from skimage.draw import disk as draw_disk
    img = rounded_field()
    areas = markers.rounded_cell_areas(img)
    np.testing.assert_allclose([c for c, _, _ in areas], markers.rounded_cells(img), atol=1e-9)
    assert len(areas) == len(ROUNDED)
    for (centroid, box, area), rc in zip(areas, ROUNDED):
        whole = np.zeros(img.shape, bool)
        whole[box] = area
        inner, outer = np.zeros(img.shape, bool), np.zeros(img.shape, bool)
        inner[draw_disk(rc, 12)] = True
        outer[draw_disk(rc, 15)] = True
        # the drawn cell (centre and ring: radius 14 px) up to the band's 6 px out of the hole
        assert whole[inner].all() and not whole[~outer].any()
        assert area.shape == img[box].shape


def test_no_marker_along_a_dark_structure_longer_than_any_cell():
    """A culture insert's wall runs dark across the field: neither it nor a body beside it is a
    cell; cells away from it keep their markers."""
    rng = np.random.default_rng(0)
    cells = [(50, c, 11, 11) for c in range(60, 600, 110)]
    beside = (140, 300, 11, 11)                  # 25 px (~2 body radii) from the wall
    img = _phase_like(rng, cells + [beside], shape=(200, 640))
    img[170:178, :] = 0.1                         # the wall, 640 px long (> 40 body radii)
    m = markers.phase_markers(img)
    assert len(m) == len(cells)
    assert np.all(m[:, 0] < 80)                   # one per cell; none beside or on the wall
    near = markers.long_dark_structures(img, radius=11.0)
    assert near[174].all() and near[140, 300] and not near[50].any()
    # a structure as long as the field is only "long" next to small cells
    assert not markers.long_dark_structures(img, radius=20.0).any()
    everything = markers.phase_markers(img, length=np.inf)
    assert len(everything) > len(cells) and np.any(np.hypot(*(everything - [140, 300]).T) < 5)
    assert not markers.long_dark_structures(_phase_like(rng, cells, shape=(200, 640)), 11.0).any()


def test_self_trained_markers_add_no_rounded_cell_beside_the_wall():
    """The additions (here the rounded cells: the image is too small for the detector) keep the
    bodies' clearance from a long dark structure."""
    from cellnb.synthetic_nuclei import self_trained_markers
    rng = np.random.default_rng(1)
    cells = [(40, c, 11, 11) for c in range(60, 600, 110)]
    img = _phase_like(rng, cells, shape=(160, 640))
    img[130:138, :] = 0.1
    rounded = [(85, 115), (112, 450)]           # a rounded cell far from the wall, one beside it
    for rc in rounded:
        img[disk(rc, 14)] = 0.95
        img[disk(rc, 7)] = 0.35
    lines = []
    found = self_trained_markers(img, log=lines.append)
    assert "rounded cells alone" in lines[0]
    bodies = markers.phase_markers(img)
    assert len(found) == len(cells) + 1 and len(bodies) == len(cells)
    np.testing.assert_allclose(found[-1], rounded[0], atol=1.0)
    # without the wall's clearance, both would be added
    np.testing.assert_allclose(markers.rounded_cells(img, bodies), rounded, atol=1.0)


@pytest.mark.parametrize("kw,msg", [({"length": 0}, "length > 0"),
                                    ({"clearance": -1}, "clearance >= 0"),
                                    ({"clearance": np.nan}, "finite clearance")])
def test_long_dark_structures_bad_parameter(kw, msg):
    img = np.random.default_rng(0).normal(size=(40, 40))
    with pytest.raises(InputError, match=msg):
        markers.long_dark_structures(img, 10.0, **kw)
    with pytest.raises(InputError, match=msg):
        markers.phase_markers(img, **kw)
    with pytest.raises(InputError, match="radius > 0"):
        markers.long_dark_structures(img, 0.0)


@pytest.mark.parametrize("kw,msg", [({"ring": -1}, "ring >= 0"), ({"centre": np.nan}, "finite"), ({"fade": np.nan}, "finite"),
                                    ({"min_area": 50, "max_area": 10}, "min_area <= max_area"),
                                    ({"band": 0}, "band >= 1")])
def test_rounded_cells_bad_parameter(kw, msg):
    img = np.random.default_rng(0).normal(size=(40, 40))
    with pytest.raises(InputError, match=msg):
        markers.rounded_cells(img, **kw)
    with pytest.raises(InputError, match=msg):
        markers.rounded_cell_areas(img, **kw)
    with pytest.raises(InputError, match="spacing >= 0"):
        markers.rounded_cells(img, spacing=-1.0)
    with pytest.raises(InputError, match="phase-contrast image"):
        markers.rounded_cell_areas(np.full((40, 40), np.nan))


def test_one_cells_split_body_makes_one_marker_two_touching_cells_two():
    """A cell whose dark body fell apart (two dark parts, grey cytoplasm between) gets one
    marker; two touching cells as far apart, a bright halo between them, keep two."""
    from skimage.draw import ellipse
    rng = np.random.default_rng(0)
    img = np.full((120, 260), 0.5)
    img[ellipse(40, 60, 18, 45)] = 0.46                  # one cell's grey cytoplasm ...
    for c in (43, 77):                                   # ... round two dark parts, 14 px apart
        img[disk((40, c), 10)] = 0.2
    for c in (163, 197):                                 # two cells, each body in its own halo
        img[ellipse(40, c, 16, 16)] = 0.75
        img[disk((40, c), 10)] = 0.2
    img[ellipse(95, 130, 14, 60)] = 0.46                 # one long cell, its parts 4 radii apart
    for c in (90, 170):
        img[disk((95, c), 10)] = 0.2
    img += rng.normal(0, 0.01, img.shape)
    split = markers.phase_markers(img, join=0)
    assert len(split) == 6
    m, bodies = markers.phase_markers(img, return_bodies=True)
    assert len(m) == 5 and bodies.max() == 5
    assert np.sum(np.abs(m[:, 0] - 40) < 3) == 3          # the split cell once, the pair twice
    assert bodies[40, 43] == bodies[40, 77] > 0           # one body, its marker on a part
    assert bodies[40, 163] != bodies[40, 197]
    assert bodies[95, 90] != bodies[95, 170]              # farther apart than `join`: two
    assert len(markers.phase_markers(img, join=5)) == 4   # a longer reach joins those too
    assert len(markers.phase_markers(img, halo=1e9)) == 4  # and with no halo test, the pair
    for k in range(1, 6):                                 # markers numbered as their bodies
        assert bodies[int(m[k - 1, 0]), int(m[k - 1, 1])] == k


@pytest.mark.parametrize("kw,msg", [({"join": -1}, "join >= 0"), ({"join": np.nan}, "finite join"),
                                    ({"halo": np.inf}, "finite halo")])
def test_join_split_bodies_bad_parameter(kw, msg):
    img = _phase_like(np.random.default_rng(1), [(30, 30, 10, 10)], shape=(60, 60))
    with pytest.raises(InputError, match=msg):
        markers.phase_markers(img, **kw)
    with pytest.raises(InputError, match="differ in shape"):
        markers.join_split_bodies(np.zeros((1, 2)), np.zeros((5, 5), int), np.zeros((4, 4)), 3.0)
