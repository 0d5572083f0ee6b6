import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest

from cellnb import datasets


def pytest_configure(config):
    # xdist's controller (``make test``: -n 2) runs no test: it skips Keras' import, ~8 s of a
    # core while its workers start, and each worker does this before its first test
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        # repeatable training needs this before TensorFlow's first op (see cellnb.train.set_seed)
        tf.config.threading.set_inter_op_parallelism_threads(1)


#: The fast suite's longest files (about 70, 70 and 40 s on a slow 2-core machine), run first:
#: ``make test`` gives each of its two workers a whole file at a time (``--dist loadfile
#: --no-loadscope-reorder``), so these start side by side and the short files fill in behind
LONGEST_FIRST = ("test_train_integrate.py", "test_synthetic_nuclei.py", "test_train_confident.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept


def write_plate(root, side: int, seed: int, n: int = 3):
    """`n` small synthetic field folders ``well_0``... under `root` (a plate for batch tests)."""
    for i in range(n):
        datasets.save_field(datasets.make_field((side, side), seed=seed + i, mean_radius=14,
                                                name=f"well_{i}"), root / f"well_{i}")
    return root


@pytest.fixture(scope="session")
def small_field():
    """A small synthetic field (fast to make) with ground truth."""
    return datasets.make_field((192, 192), seed=7, mean_radius=14)


@pytest.fixture(scope="module")
def small_patches(small_field):
    """The 64x64 patches of :func:`small_field` (nucleus markers, fluorescence mask)."""
    from cellnb import markers, mask, patches
    mk = markers.find_markers(small_field.nucleus)
    m = mask.foreground_mask(small_field.images["fluorescence"], markers=mk)
    return patches.extract_patches(small_field.stack(["fluorescence"]), mk, m, size=64)


@pytest.fixture(scope="session")
def demo_fields():
    return datasets.load_demo()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def phase_cells(shape=(256, 256), seed=0, radius=(10, 14)):
    """Dark textured bodies with a bright halo on a grey background, on a jittered grid."""
    from skimage.draw import ellipse
    rng = np.random.default_rng(seed)
    img = np.full(shape, 0.5)
    cells = np.zeros(shape, int)
    for k, (r, c) in enumerate([(r, c) for r in range(40, shape[0] - 20, 64)
                                for c in range(40, shape[1] - 20, 64)], 1):
        r, c = r + rng.integers(-6, 7), c + rng.integers(-6, 7)
        a, b = rng.integers(*radius), rng.integers(*radius)
        img[ellipse(r, c, a + 3, b + 3, shape=shape)] = 0.75
        inner = ellipse(r, c, a, b, shape=shape)
        img[inner] = 0.2 + rng.normal(0, 0.05, len(inner[0]))
        cells[inner] = k
    return (img + rng.normal(0, 0.01, shape)).astype(np.float32), cells


def one_marker_two_cells():
    """A dark dumbbell (two round cells joined by a neck) with one marker, and a round cell.

    Returns the image (96, 160) float32, the mask and the two markers (row, col): the
    first marker's label, flooded through the mask, holds two cells.
    """
    rr, cc = np.mgrid[0:96, 0:160]
    m = (np.hypot(rr - 30, cc - 30) <= 12) | (np.hypot(rr - 30, cc - 56) <= 12)
    m[26:35, 30:57] = True                             # the neck
    m |= np.hypot(rr - 60, cc - 120) <= 10
    img = np.random.default_rng(0).normal(0.5, 0.02, m.shape).astype(np.float32)
    img[m] -= 0.2
    return img, m, np.array([[30.0, 30.0], [60.0, 120.0]])


#: :func:`rounded_field`'s two rounded cells (a grey centre of radius 7 in a bright ring of 14)
ROUNDED = [(40, 40), (120, 125)]


def rounded_field(spot: bool = True, seed: int = 0):
    """A phase-contrast-like image with two rounded cells (:data:`ROUNDED`) and three look-alikes.

    A bright ring round a gap of bare background at (40, 115) (debris), a flat cell (dark body,
    thin halo) at (115, 50) and, with `spot`, a dark spot inside a bright area at (120, 187).
    """
    from skimage.draw import disk, ellipse
    img = np.full((160, 220), 0.5)
    for rc in ROUNDED:
        img[disk(rc, 14)] = 0.95
        img[disk(rc, 7)] = 0.35
    img[disk((40, 115), 14)] = 0.95
    img[disk((40, 115), 7)] = 0.5
    img[ellipse(115, 50, 20, 12)] = 0.75
    img[ellipse(115, 50, 17, 9)] = 0.2
    if spot:
        img[90:150, 160:215] = 0.95
        img[disk((120, 187), 7)] = 0.35
    return img + np.random.default_rng(seed).normal(0, 0.01, img.shape)
