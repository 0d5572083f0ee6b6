"""Synthetic nucleus images (notebook 02): training, seamless tiling, markers, errors."""
import numpy as np
import pytest

from cellnb import datasets, metrics, synthetic_nuclei as sn
from cellnb.io import InputError
from cellnb.model import build_unet


@pytest.fixture(scope="module")
def two_fields():
    return [datasets.make_field((192, 192), seed=s, mean_radius=14) for s in (11, 12)]


def test_training_lowers_the_cross_entropy(tmp_path, two_fields):
    # NumPy-drawn initial weights (any backend): the first 8 vs last 8 of 60 steps dropped by
    # 0.062-0.069 for seeds 1-3 (40 steps: 0.032-0.051)
    cfg = sn.NucleusConfig(tile=64, batch=4, max_steps=60, patience=100, seed=1)
    res = sn.train_nucleus_model([f.images["fluorescence"] for f in two_fields],
                                 [sn.nucleus_target(f.nucleus) for f in two_fields], cfg,
                                 channels=["fluorescence"], progress=False)
    assert len(res.history) == 60 and res.stop_reason == "max_steps"
    assert res.losses[-8:].mean() < res.losses[:8].mean() - 0.04
    assert 3 < res.radius < 10
    p = sn.save_nucleus_model(res, tmp_path / "nuc.keras")
    model, meta = sn.load_nucleus_model(p)
    assert meta["channels"] == ["fluorescence"] and meta["radius"] == pytest.approx(res.radius)
    prob = sn.predict_nuclei(model, two_fields[0].images["fluorescence"])
    assert prob.shape == (192, 192) and 0 <= prob.min() and prob.max() <= 1


def test_stops_at_the_cross_entropy_target(two_fields):
    cfg = sn.NucleusConfig(tile=64, batch=2, max_steps=50, window=5, target=0.99)
    res = sn.train_nucleus_model([f.images["fluorescence"] for f in two_fields],
                                 [sn.nucleus_target(f.nucleus) for f in two_fields], cfg,
                                 progress=False)
    assert res.stop_reason == "target" and len(res.history) == 5


def test_plateau_stops_early(two_fields):
    cfg = sn.NucleusConfig(tile=64, batch=2, max_steps=200, window=5, patience=2,
                           min_delta=10.0)
    res = sn.train_nucleus_model([f.images["fluorescence"] for f in two_fields],
                                 [sn.nucleus_target(f.nucleus) for f in two_fields], cfg,
                                 progress=False)
    # first window sets the best; two more without a 1000% improvement stop it
    assert res.stop_reason == "plateau" and len(res.history) == 15


def test_tiled_prediction_has_no_seams():
    # tiles keep only their centre, with a margin wider than the network's reach:
    # the tiled map equals the map of the whole image in one pass
    rng = np.random.default_rng(0)
    img = rng.random((272, 208)).astype(np.float32)
    model = build_unet(1, width=4, depth=3, patch=None, norm=False)
    whole = np.asarray(model(sn._stack(img)[None], training=False))[0, ..., 0]
    whole = 1 / (1 + np.exp(-whole))
    tiled = sn.predict_nuclei(model, img, tile=192, margin=64)
    # away from the image border (where the whole-image pass sees zero padding and the
    # tiles see a mirrored image) the two agree to float precision
    inner = np.s_[64:-64, 64:-64]
    assert np.abs(tiled[inner] - whole[inner]).max() < 1e-4
    # a margin shorter than the network's reach leaves visible seams: the test can fail
    seamy = sn.predict_nuclei(model, img, tile=96, margin=16)
    assert np.abs(seamy[inner] - whole[inner]).max() > 1e-3


def test_markers_from_a_clean_probability_image():
    f = datasets.make_field((192, 192), seed=3, mean_radius=14)
    prob = (f.nuclei > 0).astype(np.float32)
    s = metrics.marker_scores(sn.synthetic_markers(prob), f.nuclei)
    assert s["recall"] > 0.9 and s["precision"] > 0.9


def test_bad_input(two_fields):
    f = two_fields[0]
    with pytest.raises(InputError, match="one nucleus mask per cell image"):
        sn.train_nucleus_model([f.images["fluorescence"]], [], progress=False)
    with pytest.raises(InputError, match="smaller than the training tile"):
        sn.train_nucleus_model([f.images["fluorescence"]], [sn.nucleus_target(f.nucleus)],
                               sn.NucleusConfig(tile=256), progress=False)
    with pytest.raises(InputError, match="target is empty"):
        sn.train_nucleus_model([f.images["fluorescence"]], [np.zeros((192, 192), bool)],
                               sn.NucleusConfig(tile=64), progress=False)
    with pytest.raises(InputError, match="multiple of"):
        sn.NucleusConfig(tile=60).check()
    with pytest.raises(InputError, match="no nucleus found"):
        sn.synthetic_markers(np.random.default_rng(0).random((64, 64)) * 0.1, radius=4)
    model = build_unet(2, width=4, depth=3, patch=None)
    with pytest.raises(InputError, match="takes 2 channel"):
        sn.predict_nuclei(model, f.images["fluorescence"])


@pytest.mark.parametrize("name", ["field_03", "field_04"])
def test_shipped_model_finds_markers_on_unseen_fields(name):
    """The bundled model (trained on field_01 + field_02) on fields it has not seen.

    Measured (threshold 0.2): field_03 precision 0.832 / recall 0.738, field_04 0.823 / 0.833
    (paper, on its real images: ~0.98 / 0.98). On the seen fields both are ~0.90.
    """
    from pathlib import Path
    path = Path(__file__).parents[1] / "data" / "models" / "nuclei__fluorescence.keras"
    model, meta = sn.load_nucleus_model(path)
    assert meta["trained_on"] == ["field_01", "field_02"] and name not in meta["trained_on"]
    f = datasets.load_demo(name)[0]
    m = sn.synthetic_markers(sn.predict_nuclei(model, f.images["fluorescence"]), meta["radius"])
    s = metrics.marker_scores(m, f.nuclei)
    assert s["precision"] > 0.80 and s["recall"] > 0.70, s
