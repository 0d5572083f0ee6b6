"""Step 4b: the paper's modified UNet (Fig. S1), in Keras 3.

Encoder: at each level two 3x3 convolutions with ReLU, then 2x2 max
pooling. Decoder: 2x upsampling, concatenation with the encoder features of
the same resolution (skip), two 3x3 convolutions with ReLU. A final 1x1
convolution gives one **logit** per pixel; ``sigmoid(logit)`` is the
probability that the pixel belongs to the patch's cell. Returning logits
lets the loss compute ``log(1 - y) = -softplus(logit)`` exactly.

Two choices differ from the plain network of Fig. S1, both measured on the
demo data (field_01, fluorescence, 300 steps, matched mIOU against truth):

* **Group normalisation** after every convolution (mIOU 0.610). Without
  any normalisation the overlap and mask penalties drive every output to 0
  within ~10 steps, the sigmoid saturates and training never recovers
  (loss exactly 0; mIOU 0.000), even with the output bias below. Batch
  norm, the reference implementation's choice, trains (loss -173) but
  fails at inference (mIOU 0.009): its moving statistics do not match the
  per-area batch statistics the loss was minimised with. Group norm works
  per patch, so training and inference behave alike and zero-weight
  padding patches cannot bias it. ``norm="batch"`` / ``"none"`` remain
  available for comparison.
* **Output bias = logit(0.1)**: start near the loss's equilibrium instead of
  at 0.5, where the penalties are ~5x the coverage reward.

Default size ``width=16, depth=3`` (filters 16-32-64, 128 at the
bottleneck, ~0.49 M parameters, ~10x fewer than the reference's 4.9 M),
chosen for CPU speed: width 32 did not reach 50 steps in 5 minutes on 2
cores (>5x slower). Accuracy at an equal 300-step budget (field_01,
fluorescence, bfloat16, one seed): width 8 mIOU 0.579, width 16 0.610,
width 16 with depth 4 0.622 (F1@0.5 0.843 vs 0.814). Depth 4 on the 12
real Usiigaci fields with clicks (``bench/real_data.py --set depth=4``):
mIOU / AP@0.5 / touching AP@0.5 0.638 / 0.756 / 0.711 against 0.640 /
0.761 / 0.730 at depth 3, so depth 3 stays.

Speed (2 cores with AVX512-BF16, 128 patches of 64x64 with 2 channels, one
training step): group norm 1.20 s in float32, 0.90 s in ``mixed_bfloat16``
(:func:`resolve_precision` picks it where the hardware has bfloat16);
without normalisation it would be 0.43 s, so group norm is half the step.
XLA compilation (``jit_compile``) was slower on the CPU (1.62 s): it loses
oneDNN's convolutions. Two ways to cut the norm's share were measured and
rejected: a one-pass group norm (float32 statistics, scaling in bfloat16)
gave 1.06 s vs 1.09 s per step (3 %, not worth a custom layer); no norm at
the first level (where the tensors are largest) gave 0.74 s (-34 %) but
fell from mIOU 0.648 to 0.528 on a real phase-contrast field (Usiigaci set3,
300 steps). The other Keras backends are slower on this CPU
(``bench/train_speed.py --backend``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .io import InputError

__all__ = ["build_unet", "with_patch_size", "count_params", "predict_batch", "resolve_precision",
           "NORMS", "PRECISIONS"]

NORMS = ("group", "batch", "none")
# no "mixed_float16": float16 gradients need loss scaling, which the custom step does not do
PRECISIONS = ("float32", "mixed_bfloat16")


def build_unet(in_channels: int, width: int = 16, depth: int = 3, patch: int | None = None,
               prior: float = 0.1, norm: str | bool = "group", precision: str = "float32",
               name: str = "cellnb_unet", seed: int | None = None):
    """Build the UNet.

    Parameters
    ----------
    in_channels : int
        Input channels (image channels + 1 for the Gaussian disk).
    width : int
        Filters at the first level; doubled at every level down.
    depth : int
        Number of poolings (levels below the first). Input sides must be
        divisible by ``2**depth``.
    patch : int, optional
        Fixed input side; None accepts any size divisible by ``2**depth``
        (the synthetic-nucleus model runs on large tiles).
    prior : float
        Initial output probability (the final bias is ``logit(prior)``).
        The unsupervised loss starts best near its own equilibrium: with n
        patches over a pixel, a uniform output y = 1 - exp(-1/(n-1)) ~ 0.1
        balances coverage and overlap. Starting at 0.5 makes the overlap
        and mask penalties push every output to 0 within a few steps, where
        the sigmoid saturates and training dies.
    norm : {"group", "batch", "none"} or bool
        Normalisation after every convolution. ``"group"`` works per patch,
        so training and inference behave alike; ``"batch"`` is the reference
        implementation's choice; ``"none"`` is the plain network of Fig. S1.
        True / False mean "group" / "none".
    precision : {"float32", "mixed_bfloat16"}
        Keras dtype policy of the hidden layers. The output logit is always
        float32, so the loss is computed in full precision.
    name : str
    seed : int, optional
        Draw the initial convolution weights with NumPy from this seed (He
        normal, truncated at 2 sd, as Keras' ``he_normal``), so that every
        Keras backend starts from the same weights. Default: Keras' own
        initialisers (seeded by :func:`keras.utils.set_random_seed`).

    Returns
    -------
    keras.Model
        Input (batch, H, W, in_channels) float32 -> logits (batch, H, W, 1).
    """
    import keras
    from keras import layers
    if in_channels < 1 or width < 1 or depth < 1:
        raise InputError(f"build_unet: need in_channels, width, depth >= 1; got "
                         f"{in_channels}, {width}, {depth}.")
    norm = {True: "group", False: "none"}.get(norm, norm)
    if norm not in NORMS:
        raise InputError(f"build_unet: norm must be one of {NORMS}, got {norm!r}.")
    if precision not in PRECISIONS:
        raise InputError(f"build_unet: precision must be one of {PRECISIONS}, got "
                         f"{precision!r}.")
    if patch is not None and patch % (2 ** depth):
        raise InputError(f"build_unet: patch size {patch} is not divisible by 2**depth = "
                         f"{2 ** depth}; use a multiple of {2 ** depth}.")

    def block(x, f, tag):
        for k in range(2):
            # a bias right before a normalisation is redundant
            x = layers.Conv2D(f, 3, padding="same", kernel_initializer="he_normal",
                              use_bias=norm == "none", dtype=precision,
                              name=f"{tag}_conv{k}")(x)
            if norm == "group":
                x = layers.GroupNormalization(groups=min(8, f // 2), dtype=precision,
                                              name=f"{tag}_norm{k}")(x)
            elif norm == "batch":
                x = layers.BatchNormalization(dtype=precision, name=f"{tag}_norm{k}")(x)
            x = layers.Activation("relu", dtype=precision, name=f"{tag}_relu{k}")(x)
        return x

    inp = keras.Input((patch, patch, in_channels), name="patches")
    x, skips = inp, []
    for lvl in range(depth):
        x = block(x, width * 2 ** lvl, f"enc{lvl}")
        skips.append(x)
        x = layers.MaxPooling2D(2, dtype=precision, name=f"pool{lvl}")(x)
    x = block(x, width * 2 ** depth, "bottom")
    for lvl in reversed(range(depth)):
        x = layers.UpSampling2D(2, dtype=precision, name=f"up{lvl}")(x)
        x = layers.Concatenate(dtype=precision, name=f"skip{lvl}")([x, skips[lvl]])
        x = block(x, width * 2 ** lvl, f"dec{lvl}")
    if not (0 < prior < 1):
        raise InputError(f"build_unet: prior must be in (0, 1), got {prior}.")
    bias = float(np.log(prior / (1 - prior)))
    logit = layers.Conv2D(1, 1, name="logit", dtype="float32",
                          bias_initializer=keras.initializers.Constant(bias))(x)
    model = keras.Model(inp, logit, name=name)
    if seed is not None:
        _numpy_init(model, seed)
    return model


def with_patch_size(model, patch: int):
    """The same UNet, weights and all, for input patches of side `patch`.

    The UNet is fully convolutional, so its weights do not depend on the patch
    side; a model trained at one side (e.g. a shipped starting model) can start
    the training of a field whose cells call for another.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_unet`.
    patch : int
        New input side (divisible by ``2**depth``).

    Returns
    -------
    keras.Model
        `model` itself if it already takes `patch`, else a new model with its weights
        (and no optimizer state).
    """
    from keras import layers
    if model.input_shape[1] == patch:
        return model
    names = [l.name for l in model.layers]
    depth = sum(n.startswith("pool") for n in names)
    kinds = {type(l) for l in model.layers}
    norm = "group" if layers.GroupNormalization in kinds else \
        "batch" if layers.BatchNormalization in kinds else "none"
    first = model.get_layer("enc0_conv0")
    policy = first.dtype_policy.name
    new = build_unet(model.input_shape[-1], first.filters, depth, patch, norm=norm,
                     precision=policy if policy in PRECISIONS else "float32", name=model.name)
    new.set_weights(model.get_weights())
    return new


def _numpy_init(model, seed: int) -> None:
    """Redraw every convolution kernel with NumPy, as its own Keras initialiser would.

    ``he_normal`` (the UNet's convolutions): truncated normal at 2 sd with
    sd = sqrt(2 / fan_in) / 0.8796 (Keras' correction for the truncation);
    ``glorot_uniform`` (the 1x1 logit layer, Keras' default):
    U(-sqrt(6 / (fan_in + fan_out)), +...). Biases keep their constants.
    """
    from keras import layers
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2D):
            continue
        shape = tuple(layer.kernel.shape)
        fan_in, fan_out = int(np.prod(shape[:-1])), int(np.prod(shape[:-2])) * shape[-1]
        kind = type(layer.kernel_initializer).__name__
        if kind == "HeNormal":
            w = rng.standard_normal(shape)
            while (bad := np.abs(w) > 2).any():
                w[bad] = rng.standard_normal(int(bad.sum()))
            w *= np.sqrt(2.0 / fan_in) / 0.87962566103423978
        elif kind == "GlorotUniform":
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-lim, lim, shape)
        else:
            raise NotImplementedError(f"no NumPy version of the {kind} initialiser")
        layer.kernel.assign(w.astype(np.float32))


def resolve_precision(precision: str = "auto") -> str:
    """The dtype policy to train with; ``"auto"`` picks what this machine runs fastest.

    ``"auto"`` gives ``"mixed_bfloat16"`` on a GPU of compute capability
    >= 8.0 or a CPU with native bfloat16 instructions (AVX512-BF16 or AMX),
    ``"float32"`` elsewhere (emulated bfloat16 would be slower). Measured on
    a 2-core AVX512-BF16 CPU, group-norm UNet, 128 patches of 64x64: 0.90 s
    per training step in bfloat16 vs 1.20 s in float32, with the same
    accuracy (field_01, fluorescence, 300 steps: mIOU 0.610, vs 0.608 for
    the earlier float32 model).

    Parameters
    ----------
    precision : {"auto", "float32", "mixed_bfloat16"}

    Returns
    -------
    str
        One of :data:`PRECISIONS`.
    """
    if precision != "auto":
        if precision not in PRECISIONS:
            raise InputError(f"precision must be 'auto' or one of {PRECISIONS}, got "
                             f"{precision!r}.")
        return precision
    cc = _gpu_capability()
    if cc is not None:
        return "mixed_bfloat16" if cc >= (8, 0) else "float32"
    return "mixed_bfloat16" if _cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


def _gpu_capability() -> tuple[int, int] | None:
    """Compute capability of the first GPU the Keras backend uses; None on a CPU."""
    import keras
    name = keras.backend.backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
            return tuple(cc) if cc else (0, 0)
        if name == "jax":
            import jax
            dev = jax.devices()[0]
            if dev.platform != "gpu":
                return None
            cc = getattr(dev, "compute_capability", "0.0")
            return tuple(int(v) for v in str(cc).split(".")[:2])
        if name == "torch":
            import torch
            return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() \
                else None
    except (RuntimeError, ValueError):      # a broken driver: train on the CPU
        return None
    return None


def _cpu_flags() -> set:
    """CPU feature flags from /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


class _FirstTraceOfEachModel(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning (see :func:`predict_batch`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_FIRST_TRACES = _FirstTraceOfEachModel()


def predict_batch(model, x) -> np.ndarray:
    """``model.predict_on_batch(x)`` as a NumPy array, without a false retracing warning.

    Each new model (a marker detector per field, a UNet per field) compiles
    its prediction step once per batch shape, on any Keras backend.
    TensorFlow counts those first traces together across models, so from
    about the fifth field in one process (a ``cellnb batch`` worker, a
    benchmark) it warned that "tracing is expensive", though no model was
    traced again for a shape it had seen. The warning is dropped during
    this call only; any other stays.

    Parameters
    ----------
    model : keras.Model
    x : ndarray, shape (N, ...)
        One batch of the model's input.

    Returns
    -------
    ndarray
        The model's output for `x`.
    """
    log = logging.getLogger("tensorflow")
    log.addFilter(_FIRST_TRACES)
    try:
        return np.asarray(model.predict_on_batch(x))
    finally:
        log.removeFilter(_FIRST_TRACES)


def count_params(model) -> int:
    """Number of trainable parameters."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
