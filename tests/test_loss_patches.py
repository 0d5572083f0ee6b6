"""Eq. 1 and the patch geometry; backend-neutral (``keras.ops``), so the same tests run under
every Keras backend (``KERAS_BACKEND=jax pytest tests/test_loss_patches.py``); CI checks Eq. 1
and the augmentation under JAX in ``tests/test_backends.py``."""
import keras
import numpy as np
import pytest
from keras import ops

from cellnb import loss, patches
from cellnb.io import InputError


def _logit(y):
    return ops.convert_to_tensor((np.log(y) - np.log1p(-y)).astype(np.float32))


def _value_and_grad(f, z):
    """f(z) and df/dz on the backend in use (the one backend-specific helper here)."""
    name = keras.backend.backend()
    if name == "jax":
        import jax
        v, g = jax.value_and_grad(f)(ops.convert_to_tensor(z))
        return float(v), np.asarray(g)
    if name == "torch":
        import torch
        t = torch.tensor(z, requires_grad=True)
        v = f(t)
        v.backward()
        return float(v), t.grad.numpy()
    import tensorflow as tf
    t = tf.Variable(z)
    with tf.GradientTape() as tape:
        v = f(t)
    return float(v), tape.gradient(v, t).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eq1_matches_slow_reference(seed):
    """Vectorised Eq. 1 (scatter/gather) equals direct summation over pixel pairs."""
    rng = np.random.default_rng(seed)
    k, n, canvas = 8, 6, (20, 22)
    corners = np.stack([rng.integers(0, canvas[0] - k + 1, n),
                        rng.integers(0, canvas[1] - k + 1, n)], 1)
    corners[1] = corners[0] + [1, 2]          # guarantee heavy overlap
    y = rng.uniform(0.01, 0.99, (n, k, k))
    m = rng.random(canvas) > 0.3             # mask with holes: mask term active
    outside = np.stack([(~m)[r:r + k, c:c + k] for r, c in corners]).astype(np.float32)
    idx = loss.canvas_indices(corners, k, canvas)
    for lam, beta in [(1.0, 15.0), (0.5, 3.0), (0.0, 0.0)]:
        got, terms = loss.eq1_loss(_logit(y), ops.convert_to_tensor(outside),
                                   ops.convert_to_tensor(idx), canvas[0] * canvas[1], lam=lam,
                                   beta=beta)
        want = loss.eq1_reference(y, corners, m, lam=lam, beta=beta)
        assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-3)
    assert float(terms["overlap"]) > 0 and float(terms["outside"]) > 0


def test_padding_patches_contribute_nothing():
    rng = np.random.default_rng(3)
    k, canvas = 8, (16, 16)
    corners = np.array([[0, 0], [4, 4]])
    y = rng.uniform(0.1, 0.9, (2, k, k))
    out = np.zeros((2, k, k), np.float32)
    idx = loss.canvas_indices(corners, k, canvas)
    base, _ = loss.eq1_loss(_logit(y), ops.convert_to_tensor(out), ops.convert_to_tensor(idx),
                            256)
    # add a padding patch with a large output at the same place: weight 0
    y3 = np.concatenate([y, np.full((1, k, k), 0.99)])
    idx3 = np.concatenate([idx, idx[:1]])
    w = ops.convert_to_tensor(np.array([1.0, 1.0, 0.0], np.float32))
    padded, _ = loss.eq1_loss(_logit(y3), ops.zeros((3, k, k)), ops.convert_to_tensor(idx3),
                              256, weight=w)
    assert float(padded) == pytest.approx(float(base), rel=1e-6)


def test_loss_and_gradient_finite_at_extreme_logits():
    k = 8
    z = np.array([np.full((k, k), 1e4), np.full((k, k), -1e4), np.full((k, k), 80.0)], np.float32)
    idx = ops.convert_to_tensor(loss.canvas_indices(np.array([[0, 0], [0, 0], [2, 2]]), k,
                                                    (12, 12)))
    val, g = _value_and_grad(lambda t: loss.eq1_loss(t, ops.ones((3, k, k)), idx, 144)[0], z)
    assert np.isfinite(val) and np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_augmentation_inverse_all_eight_and_ops_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 2)).astype(np.float32)
    codes = np.arange(8, dtype=np.int32)
    flags = ops.convert_to_tensor(patches.dihedral_flags(codes))
    aug = patches.augment_np(x, codes)
    assert len({aug[i].tobytes() for i in range(8)}) == 8       # 8 distinct transforms
    np.testing.assert_array_equal(patches.invert_np(aug, codes), x)
    as_np = ops.convert_to_numpy
    np.testing.assert_array_equal(as_np(patches.augment_ops(ops.convert_to_tensor(x), flags)), aug)
    y = x[..., 0]
    np.testing.assert_array_equal(
        as_np(patches.invert_ops(patches.augment_ops(ops.convert_to_tensor(y), flags), flags)), y)
    np.testing.assert_array_equal(
        as_np(patches.invert_ops(ops.convert_to_tensor(patches.augment_np(y, codes)), flags)), y)


def test_extract_patches_border_and_disk():
    img = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    m = np.array([[0, 0], [20, 25], [39, 49]])
    ps = patches.extract_patches(img, m, size=16, sigma=5)
    assert ps.x.shape == (3, 16, 16, 2) and len(ps) == 3          # border markers kept
    np.testing.assert_array_equal(ps.x[1, 8, 8, 0], img[20, 25])  # marker at the centre
    assert ps.x[1, 8, 8, 1] == pytest.approx(1.0)                  # disk peak at the marker
    assert ps.x[0, :8, :, 0].sum() == 0                            # zero padding, not mirrored
    assert ps.outside[0, :8].all() and not ps.outside[1].any()     # padding is outside M
    with pytest.raises(InputError, match="even"):
        patches.extract_patches(img, m, size=15)


def test_area_batches_cover_every_patch_once():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 999, (300, 2))
    ps = patches.extract_patches(rng.random((1000, 1000)).astype(np.float32), m, size=16)
    for r in (None, rng):
        b = patches.area_batches(ps, 400, r)
        allidx = np.sort(np.concatenate(b))
        np.testing.assert_array_equal(allidx, np.arange(300))
        for g in b:  # each batch fits in one area
            assert np.ptp(ps.centres[g], axis=0).max() < 400


def _disks(radius, n=3, size=None):
    """n separate discs of `radius` on a row, markers at their centres."""
    size = size or int(2 * radius + 10)
    mask = np.zeros((size, n * size), bool)
    yy, xx = np.mgrid[:size, :n * size]
    mk = np.array([[size / 2, size / 2 + i * size] for i in range(n)])
    for r, c in mk:
        mask |= (yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2
    return mask, mk


def test_patch_geometry_follows_the_cells():
    for radius, want in ((20, (64, 1.0)), (40, (96, 1.0))):
        m, mk = _disks(radius)
        assert patches.cell_reach(m, mk) == pytest.approx([radius] * 3, abs=0.6)
        assert patches.patch_geometry(mk, m) == want
    m, mk = _disks(100)                       # cells far larger than 96 px: work at a scale
    size, scale = patches.patch_geometry(mk, m)
    assert size == 64 and scale == pytest.approx(30 / 100, abs=0.01)
    assert patches.patch_geometry(mk, m, size=96)[1] == pytest.approx(46 / 100, abs=0.01)
    assert patches.patch_geometry(mk, m, min_scale=0.5)[1] == 0.5
    grid = np.stack(np.meshgrid(np.arange(10) * 20.0, np.arange(10) * 20.0), -1).reshape(-1, 2)
    assert patches.patch_geometry(grid) == (64, 1.0)        # no mask: marker spacing
    with pytest.raises(InputError, match="even"):
        patches.patch_geometry(mk, m, size=63)


def test_patches_at_a_working_scale_keep_the_original_markers():
    m, mk = _disks(100)
    img = m.astype(np.float32) + np.random.default_rng(0).random(m.shape).astype(np.float32)
    ps = patches.extract_patches(img, mk, m, size=64, scale=0.3)
    assert ps.scale == 0.3 and ps.full_shape == m.shape
    assert ps.shape == (round(m.shape[0] * 0.3), round(m.shape[1] * 0.3))
    np.testing.assert_allclose(ps.markers, mk)
    # the marker lands on the centre pixel of its patch at the working scale
    np.testing.assert_allclose(ps.centres, np.round((mk + 0.5) * 0.3 - 0.5), atol=1)
    assert not ps.outside[:, 32, 32].any()             # the cell centre is inside the mask
    with pytest.raises(InputError, match="scale"):
        patches.extract_patches(img, mk, m, scale=1.5)
