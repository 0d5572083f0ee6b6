import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras
import numpy as np
import pytest

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    # repeatable training needs this before TensorFlow's first op (see cellnb.train.set_seed)
    tf.config.threading.set_inter_op_parallelism_threads(1)

from cellnb import datasets


@pytest.fixture(scope="session")
def small_field():
    """A small synthetic field (fast to make) with ground truth."""
    return datasets.make_field((192, 192), seed=7, mean_radius=14)


@pytest.fixture(scope="session")
def demo_fields():
    return datasets.load_demo()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
