"""Step 4c: the unsupervised loss, paper Eq. 1.

For patch outputs y^i (probabilities, zero outside patch i) on a common
canvas and the foreground mask M::

    L = - sum_x sum_i y^i(x)                                   (cover pixels)
        - lambda * sum_x sum_{i != j} y^i(x) log(1 - y^j(x))   (no overlaps)
        + beta * sum_x sum_i y^i(x) (1 - M(x))                 (stay in the mask)

(the paper writes -L; lambda = 1, beta = 15; cellnb trains with beta = 3, and with
lambda = 2 on sparse fields, see :class:`cellnb.train.TrainConfig`). The total is divided by the
number of patches, so its scale does not depend on how many cells an area
holds.

Vectorised with no loop over patches, in ``keras.ops`` so that every Keras
backend (TensorFlow, JAX, PyTorch) trains with it: with
S(x) = sum_j log(1 - y^j(x)), the overlap term is
sum_i sum_x y^i(x) (S(x) - log(1 - y^i(x))). S is one
scatter-add (``segment_sum``) of every patch onto the canvas,
gathered back at each patch's pixels; the mask term uses the ``1 - M`` crop
that travels with each patch. ``log(1 - y)`` is computed from the logit z as
``-softplus(z)``: exact, and finite for every finite z, so the loss can
never become inf/NaN (no clamp that would cut the gradient is needed).

:func:`eq1_reference` is the slow, obviously correct NumPy version used by
the tests.
"""
from __future__ import annotations

import numpy as np

__all__ = ["canvas_indices", "eq1_loss", "eq1_reference"]


def canvas_indices(corners: np.ndarray, size: int, canvas_shape: tuple[int, int]) -> np.ndarray:
    """Flat canvas index of every pixel of every patch.

    Parameters
    ----------
    corners : ndarray of int, shape (N, 2)
        Top-left corner of each patch on the canvas.
    size : int
        Patch side k.
    canvas_shape : (int, int)

    Returns
    -------
    ndarray of int32, shape (N, k * k)
    """
    corners = np.asarray(corners, np.int64)
    h, w = canvas_shape
    if len(corners) and (corners.min() < 0 or (corners[:, 0] + size).max() > h
                         or (corners[:, 1] + size).max() > w):
        raise ValueError("a patch does not fit on the canvas")
    dr, dc = np.mgrid[:size, :size]
    idx = (corners[:, 0, None, None] + dr) * w + (corners[:, 1, None, None] + dc)
    return idx.reshape(len(corners), -1).astype(np.int32)


def eq1_loss(logits, outside, index, n_canvas: int, weight=None, lam: float = 1.0,
             beta: float = 15.0):
    """Eq. 1 in ``keras.ops`` (any Keras backend), differentiable, for one batch.

    Parameters
    ----------
    logits : tensor, float32, shape (N, k, k)
        Network output for each patch, already un-augmented.
    outside : tensor, float32, shape (N, k, k)
        ``1 - M`` under each patch.
    index : tensor, int32, shape (N, k * k)
        :func:`canvas_indices`.
    n_canvas : int
        Number of canvas pixels (H * W); a Python int (JAX needs it static).
    weight : tensor, float32, shape (N,), optional
        1 for real patches, 0 for padding patches (which then contribute
        nothing, also not to the overlap of others).
    lam, beta : float or scalar tensor
        Overlap and mask-penalty weights.

    Returns
    -------
    loss : scalar tensor
        Eq. 1 divided by the number of (real) patches.
    terms : dict of scalar tensors
        ``area``, ``overlap``, ``outside`` (each per patch, unweighted by
        lambda/beta) for monitoring.
    """
    from keras import ops
    n = ops.shape(logits)[0]
    z = ops.reshape(ops.cast(logits, "float32"), (n, -1))
    y = ops.sigmoid(z)
    log1m = -ops.softplus(z)                 # log(1 - sigmoid(z)), exact and finite
    if weight is None:
        weight = ops.ones((n,), "float32")
    w = ops.expand_dims(weight, 1)
    y = y * w
    log1m = log1m * w
    s = ops.segment_sum(ops.reshape(log1m, (-1,)), ops.reshape(index, (-1,)),
                        num_segments=int(n_canvas))
    others = ops.take(s, index) - log1m      # sum over j != i of log(1 - y_j) at i's pixels
    area = ops.sum(y)
    overlap = -ops.sum(y * others)
    outside_term = ops.sum(y * ops.reshape(outside, (n, -1)))
    count = ops.maximum(ops.sum(weight), 1.0)
    loss = (-area + lam * overlap + beta * outside_term) / count
    return loss, {"area": area / count, "overlap": overlap / count,
                  "outside": outside_term / count}


def eq1_reference(y: np.ndarray, corners: np.ndarray, mask: np.ndarray, lam: float = 1.0,
                  beta: float = 15.0) -> float:
    """Eq. 1 by direct summation over pixels and patch pairs (slow; for tests).

    Parameters
    ----------
    y : ndarray, shape (N, k, k), probabilities in [0, 1)
    corners : ndarray of int, shape (N, 2)
        Top-left corners on the canvas.
    mask : ndarray of bool, shape (H, W)
        Foreground mask M on the canvas.

    Returns
    -------
    float
        L / N (same normalisation as :func:`eq1_loss`).
    """
    n, k, _ = y.shape
    h, w = mask.shape
    full = np.zeros((n, h, w))
    for i, (r, c) in enumerate(corners):
        full[i, r:r + k, c:c + k] = y[i]   # zero outside its patch
    total = 0.0
    for i in range(n):
        total -= full[i].sum()
        for j in range(n):
            if i != j:
                total -= lam * np.sum(full[i] * np.log(1.0 - full[j]))
        total += beta * np.sum(full[i] * (1 - mask))
    return total / n
