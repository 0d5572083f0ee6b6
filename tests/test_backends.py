"""Every Keras backend trains and predicts alike.

Each backend runs in its own process (Keras picks the backend once, at
import): Eq. 1 against its slow reference, the dihedral augment / invert,
then a short seeded training of the same patches in float32. The losses
must agree with TensorFlow's to float rounding, and a ``.keras`` model
saved on one backend must load and predict the same on another.
TensorFlow and JAX are CI's backends; PyTorch is tested where installed.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ["jax", "torch"]

# Trains 6 float32 steps on a small synthetic field, saves the model and its
# predictions; then loads the model saved by another backend (if given) and
# predicts with it.
SCRIPT = r"""
import json, sys
import numpy as np
from keras import ops
from cellnb import datasets, loss, markers, mask, patches, train, integrate
out, other = sys.argv[1], sys.argv[2]
# Eq. 1 in keras.ops against its direct double sum over pixel pairs
rng = np.random.default_rng(0)
k, n, canvas = 8, 6, (20, 22)
corners = np.stack([rng.integers(0, canvas[0] - k + 1, n), rng.integers(0, canvas[1] - k + 1, n)], 1)
y = rng.uniform(0.01, 0.99, (n, k, k))
m = rng.random(canvas) > 0.3
outside = np.stack([(~m)[r:r + k, c:c + k] for r, c in corners]).astype(np.float32)
idx = loss.canvas_indices(corners, k, canvas)
eq1_err = 0.0
for lam, beta in [(1.0, 15.0), (0.5, 3.0)]:
    got, _ = loss.eq1_loss(ops.convert_to_tensor((np.log(y) - np.log1p(-y)).astype(np.float32)),
                           ops.convert_to_tensor(outside), ops.convert_to_tensor(idx),
                           canvas[0] * canvas[1], lam=lam, beta=beta)
    want = loss.eq1_reference(y, corners, m, lam=lam, beta=beta)
    eq1_err = max(eq1_err, abs(float(got) - want) / abs(want))
# every dihedral transform is undone exactly
x = rng.random((8, 16, 16, 2)).astype(np.float32)
fl = patches.dihedral_flags(np.arange(8))
back = ops.convert_to_numpy(patches.invert_ops(patches.augment_ops(x[..., 0], fl), fl))
fwd = ops.convert_to_numpy(patches.augment_ops(x[..., 0], fl))
dihedral_ok = bool(np.array_equal(back, x[..., 0])
                   and np.array_equal(fwd, patches.augment_np(x[..., 0], np.arange(8))))
f = datasets.make_field((128, 128), seed=3, mean_radius=14)
mk = markers.find_markers(f.nucleus)
m = mask.foreground_mask(f.images["fluorescence"], markers=mk)
ps = patches.extract_patches(f.stack(["fluorescence"]), mk, m, size=64)
cfg = train.TrainConfig(max_steps=6, patience=100, seed=4, precision="float32", width=8)
res = train.train(ps, cfg, progress=False)
train.save_model(res, out + "/model.keras")
probs = integrate.predict_patches(res.model, ps)
np.save(out + "/probs.npy", probs)
got = {"backend": train.backend(), "losses": res.losses.tolist(), "eq1_err": eq1_err,
       "dihedral_ok": dihedral_ok}
if other != "-":
    model, _ = train.load_model(other)
    np.save(out + "/other_probs.npy", integrate.predict_patches(model, ps))
print("RESULT" + json.dumps(got))
"""


def _env(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("XLA_FLAGS", None)
    return env


def _train(backend: str, out: Path, other: Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(other or "-")],
                       env=_env(backend), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [s for s in p.stdout.splitlines() if s.startswith("RESULT")][-1]
    got = json.loads(line[len("RESULT"):])
    assert got["backend"] == backend
    return got


@pytest.fixture(scope="module")
def tensorflow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tensorflow")
    return out, _train("tensorflow", out)


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHERS)
def test_backend_matches_tensorflow(backend, tensorflow_run, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    tf_out, tf_got = tensorflow_run
    got = _train(backend, tmp_path, other=tf_out / "model.keras")
    # Eq. 1 equals its slow reference, and the augmentation is undone exactly, here too
    assert got["eq1_err"] < 1e-4 and tf_got["eq1_err"] < 1e-4
    assert got["dihedral_ok"] and tf_got["dihedral_ok"]
    # same seed, same NumPy-drawn initial weights, same batches: the same first loss to
    # float rounding; Adam then amplifies rounding (its first steps are nearly sign steps),
    # measured up to 0.25 against a loss scale of 270 after 6 steps: allow 1 % of that scale
    a, b = np.array(got["losses"]), np.array(tf_got["losses"])
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    np.testing.assert_allclose(a, b, atol=0.01 * abs(b[0]))
    assert got["losses"][-1] < got["losses"][0]
    # a model saved by TensorFlow predicts the same here as it did there
    np.testing.assert_allclose(np.load(tmp_path / "other_probs.npy"),
                               np.load(tf_out / "probs.npy"), atol=1e-4)
    # and this backend's own model is close to TensorFlow's after 6 identical steps
    diff = np.abs(np.load(tmp_path / "probs.npy") - np.load(tf_out / "probs.npy"))
    assert diff.max() < 0.05 and diff.mean() < 0.003, (diff.max(), diff.mean())
