"""Step 4d: unsupervised training of the UNet on one field's patches.

One model per dataset, as in the paper: the network sees only the
patches of the field(s) it will segment; no label is ever used.

Each step takes the patches of one area (:func:`cellnb.patches.area_batches`),
applies a random dihedral transform to every patch, runs the UNet, undoes
the transform on the output, and takes an Adam step on Eq. 1
(:func:`cellnb.loss.eq1_loss`).

Stopping rules: given a ``monitor`` (:class:`cellnb.pipeline.StableLabels`,
as ``segment`` and the notebooks do), training stops when the field's
segmentation stops changing between looks, which on every field measured
comes long before the loss settles. Otherwise, and as a backstop, the loss
plateau (a "stable minimum"): the loss is averaged over windows of
``window`` steps (at least one pass over the field); training stops when
``patience`` consecutive windows fail to improve the best window mean by
more than ``min_delta`` (relative), or at ``max_steps``.

Any Keras 3 backend trains: the loss and the augmentation are ``keras.ops``
and :class:`TrainStep` holds the thin backend-specific gradient step
(TensorFlow, the default; JAX; PyTorch). Runs are repeatable on the CPU: the
seed fixes NumPy's and the backend's random streams and the UNet's initial
weights (drawn with NumPy, so every backend starts from the same weights),
and TensorFlow's deterministic ops are switched on.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field as dc_field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .io import InputError, atomic_path
from .loss import canvas_indices, eq1_loss
from .patches import PatchSet, area_batches, augment_ops, dihedral_flags, invert_ops

__all__ = ["TrainConfig", "TrainResult", "TrainStep", "learning_rate", "resolve_warmup",
           "resolve_lam", "resolve_beta_ramp", "beta_share", "crowded",
           "check_interval", "WARMUP_STEPS", "CROWDED", "LAM_SPARSE", "BETA_RAMP",
           "BETA_RAMP_FROM", "optimizer", "StepReport", "TrainingInterrupted",
           "Plateau", "plateau_window", "train", "eq1_objective", "batch_arrays",
           "save_model", "save_keras", "load_model", "set_seed", "backend"]


@dataclass
class TrainConfig:
    """Training parameters (all saved with the model).

    Attributes
    ----------
    lam : float or "auto"
        Eq. 1's overlap weight (paper: 1). ``"auto"`` (:func:`resolve_lam`;
        the saved config records the value used): 1 on a crowded field,
        :data:`LAM_SPARSE` = 2 on a sparse one (less than :data:`CROWDED` of
        the patch pixels in the mask: the real phase-contrast fields), where a
        stronger overlap penalty splits touching cells more cleanly. Measured
        with clicks on the 12 Usiigaci fields (300-step budget, stable stop;
        mIOU / AP@0.5 / touching AP@0.5): lambda 0.5 0.626 / 0.700 / 0.634,
        1 0.636 / 0.746 / 0.721, 2 0.640 / 0.761 / 0.730 (seed 1: 0.635 /
        0.741 / 0.708 -> 0.638 / 0.753 / 0.721), 4 stopped after set1 fell
        from 0.707 / 0.941 to 0.560 / 0.517; with corrected markers 0.619 /
        0.673 / 0.564 -> 0.624 / 0.691 / 0.602; without clicks (the same
        detected markers) level over two seeds, 0.561 / 0.490 / 0.415 ->
        0.568 / 0.503 / 0.447 and 0.565 / 0.495 / 0.414 -> 0.564 / 0.483 /
        0.430. Beta 3 stays best at lambda 1: beta 1.5 0.631 / 0.725, beta 6
        0.593 / 0.618 (set1, set5, set10 and set34 fell to 0.44-0.53 AP@0.5);
        and the disk's sigma 15: 8 gave 0.634 / 0.737, 25 0.631 / 0.720. On
        the crowded demo fields lambda 2 lost: field_01 bright-field 0.607 /
        0.769 -> 0.586 / 0.651, three channels 0.683 / 0.927 -> 0.668 / 0.875
        (fluorescence 0.669 / 0.840 -> 0.675 / 0.865), so it stays 1 there.
    beta : float
        Eq. 1's mask penalty (paper: 15;
        default here 3). Eq. 1 is linear in each output y, so a pixel is
        worth covering only if the network is more than ``1 - 1/beta`` sure it
        lies in the mask: 93 % at beta = 15. On the paper's confluent fields
        that is safe; where the mask is sparse (real phase-contrast fields:
        8-26 % foreground, ~70 % of every patch outside the mask) the penalty
        outweighs any coverage the network can reach early on, every output
        is pushed to 0 and training collapses (Usiigaci set3: no pixel above
        0.5 after 300 steps) or keeps compact cores only (21-35 % of the true
        foreground). With integration inside the mask
        (:func:`cellnb.integrate.integrate`) the penalty only has to teach the
        cells' extent, not stop spills. Measured at 300 steps, cellnb's mask,
        mIOU / AP@0.5: 8 Usiigaci fields, beta 15 -> 3: 0.594 / 0.650 ->
        0.611 / 0.703; demo field_01 fluorescence 0.641 / 0.802 (cores
        integrated by distance) -> 0.673 / 0.860; field_02 fluorescence +
        bright-field + nucleus 0.678 / 0.866 -> 0.681 / 0.904. On 12
        Usiigaci fields with clicks (lambda 1) beta 1.5 gave 0.631 / 0.725
        against 0.636 / 0.746, so 3 stays; a sparse field whose training is
        unsure with both starts is trained a third time with half of it
        (:func:`cellnb.pipeline.train_confident`).
    beta_ramp : int or "auto"
        Steps over which the mask penalty rises linearly from
        :data:`BETA_RAMP_FROM` x `beta` to `beta` (0: `beta` from the first
        step). ``"auto"`` (:func:`resolve_beta_ramp`; the saved config records
        the value used): :data:`BETA_RAMP` steps on a sparse field, none on a
        crowded one. Why: on a sparse field the full penalty outweighs the
        coverage a new network reaches, its outputs sink towards 0 in the
        first steps and the start comes out unsure (see `warmup`); a lenient
        penalty while the cores form, then the full one, keeps the optimum
        where `beta` puts it. Measured on the 12 real Usiigaci fields without
        clicks (seed 0, the same detected markers and mask; mIOU / AP@0.5 /
        touching AP@0.5, training and integration per field): without the
        ramp 0.581 / 0.552 / 0.495 in 92 s, with it 0.583 / 0.556 / 0.529
        in 57 s, the first start training on set1, set20 and set30
        (repeated before; set40 still is); seed 1 0.583 / 0.548 / 0.514 ->
        0.584 / 0.545 / 0.487; with clicks 0.639 / 0.763 / 0.732 -> 0.643 /
        0.759 / 0.709. Only the first start of
        :func:`cellnb.pipeline.train_confident` ramps (measured there).
    area : int
        Side of the square area whose patches form one batch (paper: 640).
    width, depth : int
        UNet size (:func:`cellnb.model.build_unet`).
    norm : {"group", "batch", "none"}
        Normalisation layer of the UNet (:func:`cellnb.model.build_unet`).
    precision : {"auto", "float32", "mixed_bfloat16"}
        Dtype policy of the UNet's hidden layers; the loss is always float32.
        ``"auto"`` (:func:`cellnb.model.resolve_precision`) uses bfloat16
        where the hardware has it (1.34x faster per step on this project's
        CPU, same accuracy); the saved config records what was used.
    learning_rate : float
        Adam step size after the warm-up. 3e-3 measured slightly better than
        Keras' usual 1e-3 at CPU-sized budgets (300 steps: mIOU 0.608 vs 0.599
        on field_01 fluorescence; 0.614 vs 0.601 on a 256x256 crop of field_02
        with fluorescence + bright-field + nucleus).
    warmup : int or "auto"
        Steps over which the learning rate rises linearly to
        `learning_rate` (0: none). ``"auto"`` (:func:`resolve_warmup`) warms
        up over 50 steps on crowded fields and not at all on sparse ones; the
        saved config records what was used. Why it depends on the field:
        without a warm-up, training collapsed on crowded fields, depending on
        the seed alone: Adam's first steps move every
        weight by about the full rate, the outputs drop everywhere at once
        (covered area per patch 265 -> 146 in two steps) and the network
        settles in a degenerate minimum where no patch claims the cell under
        its own marker (output ~0.01 at the marker, ~0.1 on a ring 20-30 px
        out; loss -140 to -170 per patch against -200 to -300 for a real
        segmentation; no pixel of any patch above 0.5). Eq. 1 is symmetric in
        which patch claims a pixel; only the Gaussian disk breaks that
        symmetry, and the crash erases what the start had of it. Measured on
        a 256x256 crop of demo field_03 (fluorescence, 300 steps, mIOU /
        AP@0.5): seeds 0 and 2 collapsed (0.350 / 0.183, every seed of beta 15,
        beta 3, learning rate 1e-3 alike), seed 1 trained (0.605 / 0.694); with
        a 50-step warm-up seeds 0 / 2 gave 0.603 / 0.680 and 0.612 / 0.694, and
        field_01's crop 0.608 / 0.766 (0.610 / 0.750 without). A fixed Gaussian
        prior on the output logit also prevented it (0.605 / 0.707) but cost
        AP where training was healthy (field_01 0.718), so it was not kept.
        On sparse fields the warm-up does the opposite: on 3 of the 12 real
        phase-contrast Usiigaci fields (set3, set20, set34) it collapsed the
        other way (every output ~0; set3 mIOU 0.528 / AP@0.5 0.441, against
        0.642 / 0.861 without it), and none of the 12 collapsed without it.
    check_every : int
        Steps between two looks at the segmentation when :func:`train` is
        given a `monitor` (:class:`cellnb.pipeline.StableLabels`); at least
        four passes over the field, so that predicting every patch costs
        under a tenth of the training between two looks.
    stable : float
        The segmentation counts as stable, and training stops, when its cells
        overlap those of the previous look by at least this mean IoU
        (:func:`cellnb.metrics.same_id_iou`) twice in a row and the network
        is confident (measurements: :class:`cellnb.pipeline.StableLabels`).
    max_steps : int
        Step budget (a second start after a first one given up as unsure
        gets the rest of it, :func:`cellnb.pipeline.train_confident`). 300:
        the budget every figure in the README was measured at, and the one
        that bounds ``segment``'s time. With the stable-labels stop no field
        measured needed more (the 12 real Usiigaci fields stopped after
        75-250 steps with or without clicks, the demo fields after 100-300),
        while a field whose labels never settle would have trained on to
        1500 steps, the budget before: about 6 minutes of training on a
        1022x1024 field on 2 CPU cores instead of 80 s (``bench/timing.py``).
    window, patience, min_delta :
        Plateau rule (module docstring); ``window=0`` means one pass over
        the field, at least 50 steps. Shorter windows stop on noise: with
        20-step windows a 1750x1750 field stopped after 200 steps at mIOU
        0.632, below the nearest-marker split of its mask (0.646), while
        accuracy on field_02 was still rising from 300 to 600 steps.
    seed : int
    batch_multiple : int
        Batches are padded to a multiple of this many patches (zero weight)
        so the compiled step is not retraced for every batch size.
    """

    lam: float | str = "auto"
    beta: float = 3.0
    beta_ramp: int | str = "auto"
    area: int = 640
    width: int = 16
    depth: int = 3
    norm: str = "group"
    precision: str = "auto"
    learning_rate: float = 3e-3
    warmup: int | str = "auto"
    check_every: int = 25
    stable: float = 0.9
    max_steps: int = 300
    window: int = 0
    patience: int = 3
    min_delta: float = 0.005
    seed: int = 0
    batch_multiple: int = 16

    def check(self) -> "TrainConfig":
        if self.lam != "auto" and isinstance(self.lam, str):
            raise InputError(f"TrainConfig.lam must be 'auto' or a number >= 0, got {self.lam!r}.")
        numbers = ("beta", "learning_rate") if self.lam == "auto" else ("lam", "beta",
                                                                        "learning_rate")
        for name in numbers:
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0) or (name == "learning_rate" and v == 0):
                raise InputError(f"TrainConfig.{name} must be a finite number > 0 "
                                 f"(>= 0 for lam/beta), got {v}.")
        from .model import NORMS, PRECISIONS
        if self.norm not in NORMS or self.precision not in ("auto",) + PRECISIONS:
            raise InputError(f"TrainConfig: norm must be one of {NORMS} and precision 'auto' "
                             f"or one of {PRECISIONS}; got {self.norm!r}, {self.precision!r}.")
        for name in ("area", "width", "depth", "max_steps", "patience", "batch_multiple",
                     "check_every"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise InputError(f"TrainConfig.{name} must be a positive integer, got {v}.")
        for name in ("warmup", "beta_ramp"):           # step counts, or chosen from the field
            v = getattr(self, name)
            if v != "auto" and (isinstance(v, str) or int(v) != v or v < 0):
                raise InputError(f"TrainConfig.{name} must be 'auto' or an integer >= 0, got "
                                 f"{v!r}.")
        if not (0 < self.stable <= 1):
            raise InputError(f"TrainConfig.stable must be in (0, 1], got {self.stable}.")
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : keras.Model
    config : TrainConfig
    history : list of dict
        One row per step: step, loss, area, overlap, outside, patches, seconds.
    stop_reason : str
        ``"plateau"`` or ``"max_steps"``.
    patch_size, sigma, channels :
        How the patches were made (needed to apply the model).
    retried : bool
        Set by :func:`cellnb.pipeline.train_confident` when this is the second
        training of the field (the first came out unsure).
    checks : list of dict
        What the `monitor` of :func:`train` reported at each look (step,
        confident share, agreement with the previous look...).
    """

    model: object
    config: TrainConfig
    history: list = dc_field(default_factory=list)
    stop_reason: str = ""
    patch_size: int = 64
    sigma: float = 15.0
    channels: list = dc_field(default_factory=list)
    retried: bool = False
    checks: list = dc_field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.history)

    @property
    def losses(self) -> np.ndarray:
        return np.array([h["loss"] for h in self.history])


def backend() -> str:
    """The Keras backend in use: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    import keras
    return keras.backend.backend()


def _one_inter_op_thread() -> bool:
    """Ask TensorFlow for one inter-op thread (repeatable sums); False if it already runs with more.

    Only possible before TensorFlow's first op, so :func:`load_model` asks too:
    a notebook that loads a model and predicts before it trains (02) would
    otherwise train unrepeatably. Other backends: nothing to do.
    """
    if backend() != "tensorflow":
        return True
    import tensorflow as tf
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return tf.config.threading.get_inter_op_parallelism_threads() == 1
    return True


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend, and make training repeatable on the CPU.

    TensorFlow also needs its deterministic ops and no concurrent
    independent ops (inter-op threads = 1): otherwise the order of
    floating-point sums varies and runs drift apart after a few steps
    (measured: ~1e-3 relative after 5 steps). That setting can only be made
    before TensorFlow runs its first op (:func:`load_model` makes it too);
    if it is too late, a warning says so. JAX and PyTorch on the CPU repeat
    bit for bit with the seeds alone.
    """
    import warnings
    import keras
    keras.utils.set_random_seed(int(seed))
    if backend() != "tensorflow":
        return
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    if not _one_inter_op_thread():
        warnings.warn("TensorFlow was initialised before cellnb could set inter-op threads "
                      "to 1; training may not be bit-for-bit repeatable. Train before other "
                      "TensorFlow work, or call tf.config.threading."
                      "set_inter_op_parallelism_threads(1) first.", stacklevel=2)


class TrainStep:
    """One compiled gradient step of `model` on `objective`, on the Keras backend in use.

    ``objective(call, *batch)`` computes ``(loss, terms)`` in ``keras.ops``,
    where ``call(x)`` runs the model in training mode; it is the only
    method-specific part, so Eq. 1 (:func:`train`) and the synthetic-nucleus
    cross-entropy share this step. The gradient part is backend-specific and
    thin: ``tf.GradientTape`` in a ``tf.function``; ``jax.value_and_grad``
    over ``model.stateless_call`` and ``optimizer.stateless_apply`` in
    ``jax.jit`` (the weights live in this object during training and go back
    to the model on :meth:`sync`); ``loss.backward()`` for PyTorch.

    Calling it with NumPy arrays returns the loss and the terms as floats.
    """

    def __init__(self, model, optimizer, objective: Callable):
        self.model, self.optimizer, self.objective = model, optimizer, objective
        self.backend = backend()
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._fn = getattr(self, f"_{self.backend}")()

    def __call__(self, *batch) -> tuple[float, dict]:
        loss, terms = self._fn(*batch)
        return float(loss), {k: float(v) for k, v in terms.items()}

    def sync(self) -> None:
        """Write the trained weights and optimizer state back to the model (JAX)."""
        if self.backend == "jax":
            model, opt = self.model, self.optimizer
            tv, ntv, ov = self._state
            for v, val in zip(model.trainable_variables, tv):
                v.assign(val)
            for v, val in zip(model.non_trainable_variables, ntv):
                v.assign(val)
            for v, val in zip(opt.variables, ov):
                v.assign(val)

    # --- backends --------------------------------------------------------------
    def _tensorflow(self):
        import tensorflow as tf
        model, opt, objective = self.model, self.optimizer, self.objective

        def step(*batch):
            with tf.GradientTape() as tape:
                loss, terms = objective(lambda x: model(x, training=True), *batch)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss, terms

        compiled = []

        def call(*batch):
            # one trace for every batch size: areas hold different numbers of patches, and
            # a trace per size cost ~4 s each (and a retracing warning) on a large field
            if not compiled:
                sig = [tf.TensorSpec((None,) + tuple(np.shape(b)[1:]),
                                     tf.as_dtype(np.asarray(b).dtype)) for b in batch]
                compiled.append(tf.function(step, input_signature=sig))
            return compiled[0](*batch)
        return call

    def _jax(self):
        import jax
        model, opt, objective = self.model, self.optimizer, self.objective
        self._state = ([v.value for v in model.trainable_variables],
                       [v.value for v in model.non_trainable_variables],
                       [v.value for v in opt.variables])

        def loss_fn(tv, ntv, *batch):
            updated = [ntv]

            def call(x):
                out, updated[0] = model.stateless_call(tv, ntv, x, training=True)
                return out
            loss, terms = objective(call, *batch)
            return loss, (terms, updated[0])

        grad = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def jstep(state, *batch):
            tv, ntv, ov = state
            (loss, (terms, ntv)), grads = grad(tv, ntv, *batch)
            tv, ov = opt.stateless_apply(ov, grads, tv)
            return loss, terms, (tv, ntv, ov)

        def step(*batch):
            loss, terms, self._state = jstep(self._state, *batch)
            return loss, terms
        return step

    def _torch(self):
        import torch
        from keras import ops
        model, opt, objective = self.model, self.optimizer, self.objective

        def step(*batch):
            batch = [ops.convert_to_tensor(b) for b in batch]
            model.zero_grad()
            loss, terms = objective(lambda x: model(x, training=True), *batch)
            loss.backward()
            grads = [v.value.grad for v in model.trainable_weights]
            with torch.no_grad():
                opt.apply(grads, model.trainable_weights)
            return loss.detach(), {k: v.detach() for k, v in terms.items()}
        return step


PROGRESS_ENV = "CELLNB_PROGRESS"


class StepReport:
    """Progress of one training for a person at a terminal, a line at a time.

    The notebooks run in a kernel whose output goes into the executed
    notebook, not to the terminal that started ``run-notebooks``. When the
    environment variable ``CELLNB_PROGRESS`` names a file (the runner sets
    it), a training appends one line there every `every` seconds and when it
    ends (steps, loss, time so far, time left at most) and the runner prints
    them. Otherwise it does nothing.

    Parameters
    ----------
    what : str
        What is trained, e.g. ``"UNet on 412 patches (fluorescence)"``.
    total : int
        The step budget (training may stop earlier, at a stable minimum).
    every : float
        Seconds between lines.
    """

    def __init__(self, what: str, total: int, every: float = 20.0):
        self.path = os.environ.get(PROGRESS_ENV)
        self.what, self.total, self.every = what, int(total), float(every)
        self.t0 = self.last = time.perf_counter()

    def _write(self, text: str) -> None:
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(text + "\n")

    def update(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        left = (now - self.t0) / step * (self.total - step)
        self._write(f"{self.what}: step {step}/{self.total}, loss {loss:.4g}, "
                    f"{now - self.t0:.0f} s, at most {left:.0f} s left")

    def done(self, steps: int, reason: str, loss: float) -> None:
        self._write(f"{self.what}: {reason} after {steps} steps, loss {loss:.4g}, "
                    f"{time.perf_counter() - self.t0:.0f} s")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; ``.result`` holds the model and history so far.

    A KeyboardInterrupt, so an interrupted program still stops; a caller that
    wants to keep the work (``segment --save-model``) saves ``.result``, which
    :func:`train` can continue from (``model=``) like any saved model.
    """

    def __init__(self, result: "TrainResult"):
        super().__init__(f"training interrupted after {result.steps} steps")
        self.result = result


class Plateau:
    """The stopping rule shared by both trainings: a run of window means without progress.

    Feed it the mean loss of each window; :meth:`update` returns True once
    `patience` consecutive windows failed to beat the best mean by more than
    `min_delta` (relative). The first window always counts as progress.
    """

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale = np.inf, 0

    def update(self, mean: float) -> bool:
        mean = float(mean)
        if not np.isfinite(self.best) or mean < self.best - self.min_delta * abs(self.best):
            self.best, self.stale = mean, 0
            return False
        self.stale += 1
        return self.stale >= self.patience


def plateau_window(cfg: TrainConfig, n_batches: int) -> int:
    """Steps per window of the plateau rule: ``cfg.window``, or one pass (at least 50 steps)."""
    return int(cfg.window or max(50, n_batches))


#: warm-up steps of ``warmup="auto"`` on a crowded field
WARMUP_STEPS = 50
#: ``warmup="auto"`` warms up, and ``lam="auto"`` keeps the paper's lambda, when at least this
#: share of the patch pixels lies in the mask
CROWDED = 0.5
#: Eq. 1's overlap weight of ``lam="auto"`` on a sparse field (the paper's 1 on a crowded one)
LAM_SPARSE = 2.0
#: steps of ``beta_ramp="auto"`` on a sparse field (none on a crowded one)
BETA_RAMP = 100
#: the share of beta that a ramp starts from
BETA_RAMP_FROM = 0.5


def crowded(patches: PatchSet) -> bool:
    """True when at least :data:`CROWDED` of the patch pixels lie in the foreground mask."""
    return (1.0 - float(np.mean(patches.outside)) if len(patches) else 1.0) >= CROWDED


def resolve_lam(lam, patches: PatchSet) -> float:
    """Eq. 1's overlap weight for these patches: `lam` itself, or chosen for ``"auto"``.

    ``"auto"``: the paper's 1 on a crowded field (:func:`crowded`),
    :data:`LAM_SPARSE` on a sparse one (:class:`TrainConfig`, ``lam``).
    """
    if lam != "auto":
        return float(lam)
    return 1.0 if crowded(patches) else LAM_SPARSE


def resolve_beta_ramp(ramp, patches: PatchSet) -> int:
    """The mask penalty's ramp for these patches: `ramp` itself, or chosen for ``"auto"``.

    ``"auto"``: :data:`BETA_RAMP` steps on a sparse field (:func:`crowded`
    False), 0 on a crowded one (:class:`TrainConfig`, ``beta_ramp``).
    """
    if ramp != "auto":
        return int(ramp)
    return 0 if crowded(patches) else BETA_RAMP


def beta_share(ramp: int, step: int) -> float:
    """The share of beta that Eq. 1 uses at training step `step` (0 = the first).

    Rises linearly from :data:`BETA_RAMP_FROM` at step 0 to 1 at step `ramp`
    (:class:`TrainConfig`, ``beta_ramp``); 1 throughout when `ramp` is 0.
    """
    if not ramp:
        return 1.0
    return BETA_RAMP_FROM + (1.0 - BETA_RAMP_FROM) * min(step / ramp, 1.0)


def resolve_warmup(warmup, patches: PatchSet) -> int:
    """The warm-up steps for these patches: `warmup` itself, or chosen for ``"auto"``.

    ``"auto"``: :data:`WARMUP_STEPS` when at least :data:`CROWDED` of the
    patch pixels lie in the foreground mask (a crowded field), else 0. That
    share is what Eq. 1 sees: where most of every patch is outside the mask,
    the mask penalty outweighs the coverage a slowly starting network can
    reach, and the warm-up's first small steps let every output sink to 0;
    where the cells fill the patches, Adam's first full-rate steps are what
    collapses (:class:`TrainConfig`, ``warmup``). Measured share: the 8 demo
    fields' fluorescence and bright-field patches 0.76-0.83, the 12 real
    phase-contrast Usiigaci fields 0.15-0.39 (no field in between).

    Parameters
    ----------
    warmup : int or "auto"
    patches : PatchSet

    Returns
    -------
    int
    """
    if warmup != "auto":
        return int(warmup)
    return WARMUP_STEPS if crowded(patches) else 0


def learning_rate(cfg: TrainConfig):
    """The learning rate of :func:`train`: warmed up linearly over ``cfg.warmup`` steps, then constant.

    Returns
    -------
    float or keras.optimizers.schedules.LearningRateSchedule
        A built-in Keras schedule (``CosineDecay`` with ``alpha=1``, i.e. no
        decay after the warm-up), so a saved model loads anywhere; called
        with the step number it gives the rate of that step
        (``cfg.learning_rate / cfg.warmup`` at step 0).
    """
    import keras
    if cfg.warmup == "auto":
        raise InputError("learning_rate: warmup='auto' depends on the patches; resolve it "
                         "first (resolve_warmup), as train does.")
    if not cfg.warmup:
        return cfg.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / cfg.warmup, decay_steps=1, alpha=1.0,
        warmup_target=cfg.learning_rate, warmup_steps=cfg.warmup)


def optimizer(cfg: TrainConfig):
    """Adam at :func:`learning_rate`."""
    import keras
    return keras.optimizers.Adam(learning_rate(cfg))


def batch_arrays(ps: PatchSet, idx: np.ndarray, canvas: int, multiple: int):
    """Inputs of one area batch: patches, 1-M crops, canvas indices, weights (padded).

    Padding repeats real patches with weight 0: they add nothing to the loss,
    and unlike all-zero patches they do not skew batch-norm statistics.
    Used by the training loop and by notebook 04's loss-term widget.

    Parameters
    ----------
    ps : PatchSet
    idx : ndarray of int, shape (n,)
        The patches of one area (:func:`cellnb.patches.area_batches`).
    canvas : int
        Side of the area canvas, px at the working scale.
    multiple : int
        Pad the batch to a multiple of this many patches.

    Returns
    -------
    x : ndarray of float32, shape (m, S, S, C)
        Patch inputs, m = n rounded up to `multiple`.
    outside : ndarray of float32, shape (m, S, S)
        1 - mask crops.
    index : ndarray of int, shape (m, S, S)
        Flat canvas index of every patch pixel.
    weight : ndarray of float32, shape (m,)
        1 for the real patches, 0 for the padding.
    """
    n = len(idx)
    n_pad = int(np.ceil(n / multiple) * multiple)
    full = np.resize(idx, n_pad)       # idx, then idx again from its start
    local = ps.corners[full] - ps.corners[idx].min(0)
    w = np.zeros(n_pad, np.float32)
    w[:n] = 1.0
    return (ps.x[full], ps.outside[full],
            canvas_indices(local, ps.size, (canvas, canvas)), w)


def eq1_objective(n_canvas: int, lam: float, beta: float) -> Callable:
    """Eq. 1 of one area batch as a :class:`TrainStep` objective.

    The batch is (patches, 1 - M crops, canvas indices, weights, dihedral
    flags): each patch is flipped/transposed, run through the UNet, and the
    output flipped back before the loss, so the augmentation never moves a
    pixel on the canvas.
    """
    def objective(call, x, outside, index, weight, flags):
        logits = invert_ops(call(augment_ops(x, flags))[..., 0], flags)
        return eq1_loss(logits, outside, index, n_canvas, weight, lam, beta)
    return objective


def check_interval(cfg: TrainConfig, n_batches: int) -> int:
    """Steps between two looks of a `monitor`: ``cfg.check_every``, at least four passes.

    A look predicts every patch once (about a third of a training step's work
    per patch), so four passes keep it under a tenth of the training.
    """
    return int(max(cfg.check_every, 4 * n_batches))


def train(patches: PatchSet, config: TrainConfig | None = None, model=None,
          progress: bool = True, callback: Callable[[dict], None] | None = None,
          channels: list | None = None, sigma: float = 15.0,
          monitor: Callable[[object, int], str | None] | None = None) -> TrainResult:
    """Train (or continue training) the UNet on one field's patches.

    Parameters
    ----------
    patches : PatchSet
        From :func:`cellnb.patches.extract_patches` (with the mask).
    config : TrainConfig, optional
    model : keras.Model, optional
        Continue from this model (e.g. :func:`load_model`); its optimizer
        state is kept. Default: a new UNet.
    progress : bool
        Show a progress bar with the loss (stderr).
    callback : callable, optional
        Called with each step's history row.
    channels : list of str, optional
        Names of the image channels (recorded with the model).
    sigma : float
        Gaussian-disk sigma used for `patches` (recorded with the model).
    monitor : callable, optional
        ``monitor(model, step)`` is called every :func:`check_interval` steps
        with the model as trained so far; a string it returns stops the
        training and becomes the `stop_reason` (e.g. ``"stable"``). Its
        ``checks`` attribute, if any, is kept as ``TrainResult.checks``
        (:class:`cellnb.pipeline.StableLabels`).

    Returns
    -------
    TrainResult
    """
    from .model import build_unet, resolve_precision
    cfg = (config or TrainConfig()).check()
    # record what ran
    cfg = replace(cfg, precision=resolve_precision(cfg.precision),
                  warmup=resolve_warmup(cfg.warmup, patches), lam=resolve_lam(cfg.lam, patches),
                  beta_ramp=resolve_beta_ramp(cfg.beta_ramp, patches))
    if len(patches) == 0:
        raise InputError("train: no patches (no markers); nothing to learn from.")
    if patches.size % (2 ** cfg.depth):
        raise InputError(f"train: patch size {patches.size} must be divisible by 2**depth "
                         f"({2 ** cfg.depth}).")
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    in_ch = patches.x.shape[-1]
    if model is None:
        model = build_unet(in_ch, cfg.width, cfg.depth, patches.size, norm=cfg.norm,
                           precision=cfg.precision, seed=cfg.seed)
        model.compile(optimizer=optimizer(cfg))
    elif model.input_shape[-1] != in_ch:
        raise InputError(f"train: the model takes {model.input_shape[-1]} input channels but "
                         f"the patches have {in_ch}; use the same image channels.")
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=optimizer(cfg))
    h, w = patches.shape
    canvas = min(cfg.area, max(h, w)) + patches.size
    step = TrainStep(model, model.optimizer, eq1_objective(canvas * canvas, cfg.lam, cfg.beta))

    n_batches = len(area_batches(patches, cfg.area))
    window = plateau_window(cfg, n_batches)
    every = check_interval(cfg, n_batches)
    history: list[dict] = []
    plateau, reason = Plateau(cfg.patience, cfg.min_delta), "max_steps"
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.max_steps, desc="training", unit="step", file=sys.stderr)
    report = StepReport(f"training on {len(patches)} patches"
                        + (f" ({'+'.join(channels)})" if channels else ""), cfg.max_steps)
    t0 = time.perf_counter()
    try:
        while len(history) < cfg.max_steps and reason == "max_steps":
            for idx in area_batches(patches, cfg.area, rng):
                x, out, index, wt = batch_arrays(patches, idx, canvas, cfg.batch_multiple)
                share = beta_share(cfg.beta_ramp, len(history))
                if share != 1.0:
                    # the ramp scales the mask penalty: beta x share, through its (1 - M) crops
                    out = (out * share).astype(np.float32)
                flags = dihedral_flags(rng.integers(0, 8, len(x)))
                loss, terms = step(x, out, index, wt, flags)
                terms["outside"] /= share      # the history's terms stay unweighted by beta
                row = {"step": len(history) + 1, "loss": loss, **terms,
                       "patches": int(len(idx)), "seconds": time.perf_counter() - t0}
                if not np.isfinite(loss):
                    raise FloatingPointError(f"train: loss became {loss} at step "
                                             f"{row['step']}; lower learning_rate.")
                history.append(row)
                if callback:
                    callback(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.2f}")
                report.update(len(history), loss)
                if len(history) % window == 0:
                    if plateau.update(np.mean([r["loss"] for r in history[-window:]])):
                        reason = "plateau"
                        break
                if monitor is not None and len(history) % every == 0:
                    step.sync()            # JAX: the monitor predicts with the model's weights
                    said = monitor(model, len(history))
                    if said:
                        reason = said
                        break
                if len(history) >= cfg.max_steps:
                    break
    except KeyboardInterrupt:      # the finally below syncs the weights before this leaves
        raise TrainingInterrupted(TrainResult(
            model=model, config=cfg, history=history, stop_reason="interrupted",
            patch_size=patches.size, sigma=sigma, channels=list(channels or []))) from None
    finally:
        step.sync()        # the model holds the last weights, also after an interruption
        if bar is not None:
            bar.close()
    if history:
        report.done(len(history), reason, history[-1]["loss"])
    return TrainResult(model=model, config=cfg, history=history, stop_reason=reason,
                       patch_size=patches.size, sigma=sigma, channels=list(channels or []),
                       checks=list(getattr(monitor, "checks", [])))


def save_model(result: TrainResult, path: str | Path, **extra) -> Path:
    """Save the model (``.keras``, with optimizer state) and its parameters (``.json``).

    Both files are written atomically; the JSON holds the config, patch
    size, sigma, channel names, stop reason and the loss curve, and any
    `extra` key (e.g. ``confident``, from :func:`cellnb.cache.cached_model`).
    """
    meta = {"config": asdict(result.config), "patch_size": result.patch_size,
            "sigma": result.sigma, "channels": result.channels,
            "stop_reason": result.stop_reason, "steps": result.steps,
            "retried": result.retried, "checks": result.checks, "history": result.history,
            **extra}
    return save_keras(result.model, path, meta)


def save_keras(model, path: str | Path, meta: dict) -> Path:
    """Write `model` to ``path`` (``.keras``) and `meta` beside it (``.json``), atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: models are saved as .keras files.")
    with atomic_path(path) as tmp:
        model.save(tmp)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_model(path: str | Path):
    """Load a model saved by :func:`save_model`.

    Returns
    -------
    model : keras.Model
    meta : dict
        The saved parameters (``config``, ``patch_size``, ``sigma``,
        ``channels``, ``history``...); empty if the JSON is missing.
    """
    import keras
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found.")
    _one_inter_op_thread()          # before TensorFlow's first op: later trainings repeat
    try:
        model = keras.models.load_model(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot be loaded as a Keras model ({exc}).") from None
    return model, read_meta(path.with_suffix(".json"))


def read_meta(path: Path) -> dict:
    """The JSON beside a saved model (empty if there is none); one clear error if corrupt."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: the model's parameter file is corrupt ({exc}); restore it "
                         "or retrain the model.") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: the model's parameter file must hold a JSON object.")
    return meta
