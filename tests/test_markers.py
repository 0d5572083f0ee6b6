import numpy as np
import pytest
from skimage.draw import disk

from cellnb import markers, metrics
from cellnb.io import InputError


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
