"""When training has learnt enough, and when it starts again: the label-stability monitor, the
confident share of a trained network, and the second (and, on sparse fields, third) start.

Apart from test_train_integrate.py so that ``make test`` can run the two files side by side."""
import numpy as np
import pytest

from cellnb import integrate, patches, pipeline, train
from cellnb.model import build_unet

#: These tests check the starts' decisions, not what the network learns: a small UNet keeps their
#: real trainings (a build and a compiled step each) cheap
SMALL = dict(width=8, depth=2)


def test_stable_labels_stops_once_the_segmentation_stops_changing(small_patches, monkeypatch):
    n = len(small_patches)
    shares = iter([0.9, 0.1, 0.9, 0.9, 0.9, 0.9])
    monkeypatch.setattr(integrate, "predict_patches", lambda model, ps: np.zeros((n, 2, 2)))
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: next(shares))
    a = np.zeros((20, 20), np.int32)
    a[2:10, 2:10], a[12:18, 12:18] = 1, 2
    b = a.copy()
    b[2:10, 9] = 0                          # cell 1 lost a column: IoU 56/64
    looks = iter([a, a, b, b, b])
    mon = pipeline.StableLabels(small_patches, lambda probs: next(looks), stable=0.95, start=10)
    assert mon(None, 5) is None and mon.checks == []            # still warming up
    assert mon(None, 10) is None                                # first confident look
    assert mon(None, 20) is None                                # unsure: no comparison
    assert mon(None, 30) is None                                # confident again, first look
    assert mon(None, 40) is None and mon.checks[-1]["agreement"] == pytest.approx((56 / 64 + 1) / 2)
    assert mon(None, 50) is None and mon.checks[-1]["agreement"] == 1.0   # once is not enough
    assert mon(None, 60) == "stable"                                      # twice in a row
    assert [c["step"] for c in mon.checks] == [10, 20, 30, 40, 50, 60]
    # a first training still unsure after `give_up` steps stops at once
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: 0.2)
    mon = pipeline.StableLabels(small_patches, lambda probs: a, give_up=30)
    assert mon(None, 20) is None and mon(None, 30) == "unsure"


def test_stable_labels_wait_for_the_mask_coverage_to_settle_near_the_rule_boundary(
        small_patches, monkeypatch):
    # near FLOOD_BELOW the coverage decides the integration's rule: labels that agree while
    # it climbs (demo field_02, three channels: 0.71 -> 0.79 at 0.91 agreement) have not settled
    assert integrate.FLOOD_BELOW - pipeline.COVER_STEADY == pytest.approx(0.75)
    n = len(small_patches)
    monkeypatch.setattr(integrate, "predict_patches", lambda model, ps: np.zeros((n, 2, 2)))
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: 0.9)
    a = np.zeros((20, 20), np.int32)
    a[2:10, 2:10] = 1

    def looks(covers):
        it = iter(covers)
        monkeypatch.setattr(integrate, "mask_coverage", lambda probs, ps, mask: next(it))
        mon = pipeline.StableLabels(small_patches, lambda probs: a, mask=np.ones((20, 20), bool))
        said = [mon(None, 10 * (k + 1)) for k in range(len(covers))]
        assert [c["cover"] for c in mon.checks] == covers
        assert [c["agreement"] for c in mon.checks] == [None] + [1.0] * (len(covers) - 1)
        return said

    # agreement 1.0 at every look; the climb 0.70 -> 0.79 near the boundary resets the count,
    # 0.79 -> 0.83 -> 0.85 are steady: stable at step 50 (without the mask: at 30)
    assert looks([0.66, 0.70, 0.79, 0.83, 0.85]) == [None, None, None, None, "stable"]
    # far below it a moving coverage changes nothing: the rule stays flooding (real fields)
    assert looks([0.20, 0.35, 0.50]) == [None, None, "stable"]
    # without a mask the same looks stop at the second comparison, as before
    mon = pipeline.StableLabels(small_patches, lambda probs: a)
    assert [mon(None, step) for step in (10, 20, 30)] == [None, None, "stable"]


def test_an_unsure_first_training_is_given_up_early(small_patches, monkeypatch):
    monkeypatch.setattr(pipeline, "UNSURE_AFTER", 4)
    monkeypatch.setattr(train, "WARMUP_STEPS", 2)

    def retry(budget):
        shares = iter([0.0, 0.0, 0.9, 0.9])  # first: the look and the kept outputs; the retry
        monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: next(shares, 0.9))
        lines = []
        res, _, share = pipeline.train_confident(
            small_patches, train.TrainConfig(max_steps=budget, warmup=0, check_every=1, **SMALL),
            progress=False, log=lines.append, labels_of=lambda probs: np.ones((4, 4), np.int32))
        assert "after 4 steps" in lines[0] and res.retried and res.config.warmup == 2
        assert share == 0.9 and res.stop_reason in ("stable", "max_steps")
        return res

    # the second start trains on the rest of the budget: 12 steps in all, at most
    res = retry(12)
    assert res.config.max_steps == 8 and res.steps <= 8
    # but never on less than its warm-up, UNSURE_AFTER steps and two looks (a small budget)
    assert retry(7).config.max_steps == 2 + 4 + 2 * 1


def test_confident_share_tells_a_collapsed_training():
    img = np.random.default_rng(0).random((60, 60)).astype(np.float32)
    ps = patches.extract_patches(img, [[20, 20], [20, 40], [40, 30]], size=16)
    probs = np.full((3, 16, 16), 0.1, np.float32)
    probs[:, 6:11, 6:11] = 0.9          # a confident core at each marker
    assert integrate.confident_share(probs, ps) == 1.0
    assert integrate.collapse_message(1.0) is None
    ring = np.full((3, 16, 16), 0.6, np.float32)
    ring[:, 4:13, 4:13] = 0.01          # high only away from the own marker: collapsed
    probs[1:] = ring[1:]
    assert integrate.confident_share(probs, ps) == pytest.approx(1 / 3)
    msg = integrate.collapse_message(1 / 3)
    assert "not confident" in msg and "33%" in msg and "seed" in msg
    assert integrate.confident_share(np.zeros((0, 16, 16)), ps) == 0.0


def test_segment_says_when_the_network_is_not_confident(small_field):
    """A model whose every output is ~0: labels still come from the mask, and a line says so."""
    m = build_unet(2, width=8, depth=3, patch=64)
    logit = m.get_layer("logit")
    logit.kernel.assign(np.zeros(tuple(logit.kernel.shape), np.float32))
    logit.bias.assign(np.full(tuple(logit.bias.shape), -8.0, np.float32))
    lines = []
    res = pipeline.segment(small_field.images["fluorescence"], nucleus=small_field.nucleus,
                           model=m, log=lines.append)
    assert res.confident == 0.0 and res.labels.max() > 0
    assert "not confident" in res.warning
    assert any(s.startswith("[cellnb] WARNING: the network is not confident") for s in lines)
    # the notebooks' path (05 -> apply_model) warns too
    with pytest.warns(pipeline.CollapseWarning, match="not confident"):
        pipeline.apply_model(m, {"patch_size": 64, "sigma": 15.0}, small_field,
                             ["fluorescence"], res.markers, res.mask)


def test_an_unsure_training_is_repeated_once_with_the_other_start(small_patches, monkeypatch):
    shares = iter([0.0, 0.9])
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: next(shares))
    lines = []
    res, probs, share = pipeline.train_confident(
        small_patches, train.TrainConfig(max_steps=2, warmup=50, **SMALL), progress=False,
        log=lines.append)
    assert res.retried and res.config.warmup == 0 and res.steps == 2 and share == 0.9
    assert res.config.max_steps == 2     # the first used the whole budget: the second gets its own
    assert probs.shape == small_patches.x.shape[:3]
    assert lines and "training again from new weights with warmup=0" in lines[0]
    # a confident first training is kept as it is, and so is a continued one
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: 0.95)
    res, _, _ = pipeline.train_confident(
        small_patches, train.TrainConfig(max_steps=2, warmup=0, **SMALL), progress=False,
        log=lines.append)
    assert not res.retried and res.config.warmup == 0 and len(lines) == 1
    monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: 0.0)
    res2, _, _ = pipeline.train_confident(small_patches, train.TrainConfig(max_steps=2, **SMALL),
                                          init=res.model, progress=False, log=lines.append)
    assert not res2.retried and len(lines) == 1


def test_a_sparse_field_unsure_with_both_starts_gets_a_third_with_half_the_mask_penalty(
        small_patches, monkeypatch):
    """Sparse: when the other warm-up is unsure too, the first start again with beta halved.

    The starts' decisions only: :func:`cellnb.train.train` is replaced by a stand-in that records
    each start's config (the real one runs in the test above; ten of them cost a minute)."""
    from dataclasses import replace
    starts = []

    def fake_train(ps, c, model=None, monitor=None, **kwargs):
        starts.append(c)
        return train.TrainResult(model=None, config=c, stop_reason="max_steps",
                                 history=[{"step": s + 1} for s in range(c.max_steps)])

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(integrate, "predict_patches",
                        lambda model, ps: np.zeros(ps.x.shape[:3], np.float32))
    outside = np.ones_like(small_patches.outside)
    outside[:, 24:40, 24:40] = 0.0              # 6% of each patch in the mask: sparse
    sparse = replace(small_patches, outside=outside)
    assert train.crowded(small_patches) and not train.crowded(sparse)
    cases = ((sparse, [0.0, 0.2, 0.9], (0, 1.5), ["warmup=50", "20%", "beta=1.5"]),
             (sparse, [0.0, 0.9], (50, 3.0), ["warmup=50"]),            # rescued by the warm-up
             (sparse, [0.3, 0.1, 0.0], (0, 3.0), ["warmup=50", "beta=1.5"]),  # the most confident
             (small_patches, [0.0, 0.1], (50, 3.0), ["warmup=50"]))     # crowded: two starts
    for ps, looks, kept, said in cases:
        starts.clear()
        shares = iter(looks)
        monkeypatch.setattr(integrate, "confident_share", lambda probs, ps: next(shares))
        lines = []
        res, _, share = pipeline.train_confident(
            ps, train.TrainConfig(max_steps=2, warmup=0, beta=3.0), progress=False,
            log=lines.append)
        assert res.retried and share == max(looks) and next(shares, None) is None
        assert (res.config.warmup, res.config.beta) == kept
        assert len(lines) == len(looks) - 1
        assert all(s in "".join(lines) for s in said)
        # one start per look: the other warm-up first, then the first one's with beta halved
        assert len(starts) == len(looks) and starts[0].warmup == 0
        assert [(c.warmup, c.beta) for c in starts[1:]] == [(50, 3.0), (0, 1.5)][:len(looks) - 1]
