"""Batch reruns: many fields x many parameter sets, resumable, on Dask.

``python -m cellnb batch --fields PLATE/ --params base.yaml --grid grid.yaml
--out runs/plate1 --workers 2`` runs, for every field and every parameter
set, either the notebook series (``--mode notebooks``, papermill via
:func:`cellnb.runner.run_notebooks`) or the one-call pipeline
(``--mode segment``, :func:`cellnb.pipeline.segment_field`), each into its
own folder::

    runs/plate1/
      index.csv, index.md         status, time and headline metrics of every run
      runs/<field>__<set>/        finished runs (result.json is written last)
      failed/<field>__<set>/      failed runs: partial outputs + error.txt
      models/<set>.keras          shared models (--train-on K)
      .partial/                   runs in progress

Scheduling is Dask's (``dask.distributed``): a ``LocalCluster`` of N
single-threaded worker processes by default, or an existing cluster given by
``--scheduler tcp://host:8786``, so the same command scales to many machines
(the output folder must then be on a shared file system). Every task limits
TensorFlow to ``threads`` intra-op threads so workers do not oversubscribe
the cores.

Safety: a run is written into ``.partial/`` and moved into ``runs/`` only
when complete, so an interrupted batch never leaves a half-written result
that looks finished; a rerun skips finished runs (``--force`` redoes them)
and retries failed ones; a failing run is recorded and never stops the
others.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .io import InputError

__all__ = ["Task", "discover_fields", "parameter_sets", "load_grid", "plan", "run_task", "train_shared",
           "run_batch", "write_index"]

#: Parameters of ``--mode segment`` and their defaults (the YAML may set any of them).
SEGMENT_DEFAULTS = {"configs": ["fluorescence"], "steps": 300, "seed": 0, "threshold": 0.5,
                    "background": "mask", "patch_size": None, "precision": "auto",
                    "detector": None}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class Task:
    """One run: one field with one parameter set.

    Attributes
    ----------
    run_id : str
        ``<field>__<set>``; the run's folder name.
    field : str
        Path of the field folder.
    set_name : str
    params : dict
        The parameter set (base YAML updated by the grid point).
    mode : str
        ``"notebooks"`` or ``"segment"``.
    out : str
        The batch folder.
    threads : int
        TensorFlow intra-op threads for this run.
    only : list of str or None
        Notebooks to run (notebooks mode).
    model : str or None
        Shared model to apply instead of training (segment mode).
    """

    run_id: str
    field: str
    set_name: str
    params: dict
    mode: str
    out: str
    threads: int = 1
    only: list | None = None
    model: str | None = None


# --------------------------------------------------------------------------
# what to run
# --------------------------------------------------------------------------
def _is_field(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def discover_fields(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Field folders from folders and list files.

    Parameters
    ----------
    sources : sequence of path-like
        Each is a field folder (it holds images), a folder of field folders
        (a plate), or a text file listing field folders one per line
        (relative paths are relative to the list file; ``#`` comments).

    Returns
    -------
    list of Path
        Sorted within each source; names must be unique.
    """
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_file():
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{p}: not a text list of field folders (one per line); "
                                 "give field or plate folders, or such a list.") from None
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line) if Path(line).is_absolute() else p.parent / line
                    if not q.is_dir():
                        raise InputError(f"{p}: listed field {line!r} is not a folder.")
                    out.append(q)
        elif p.is_dir():
            if _is_field(p):
                out.append(p)
            else:
                subs = sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
                if not subs:
                    raise InputError(f"{p}: holds neither images nor field folders.")
                out.extend(subs)
        else:
            raise InputError(f"{p}: no such folder or list file (give a plate folder, field "
                             "folders, or a text file listing them).")
    names = [q.name for q in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two fields share the name(s) {dup}; field folder names must be "
                         "unique within a batch (they name the runs).")
    if not out:
        raise InputError("no fields given.")
    return out


def parameter_sets(base: dict, grid: dict | list | None = None) -> list[tuple[str, dict]]:
    """Parameter sets: the base parameters updated by each grid point.

    Parameters
    ----------
    base : dict
        Parameters shared by every run (a runner YAML).
    grid : dict of list, or list of dict, optional
        A mapping ``name: [values]`` gives the Cartesian product; a list of
        mappings gives one set each. Keys may be ``"04_train.steps"`` to set
        a key inside a notebook section.

    Returns
    -------
    list of (name, params)
        Names ``set01``, ``set02``... (``base`` when there is no grid).
    """
    if not grid:
        return [("base", dict(base))]
    if isinstance(grid, dict):
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise InputError(f"grid: {k!r} must map to a non-empty list of values, got {v!r}.")
        points = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    elif isinstance(grid, list) and all(isinstance(g, dict) for g in grid):
        points = grid
    else:
        raise InputError("grid: give a mapping of name: [values] or a list of mappings.")
    sets = []
    for i, point in enumerate(points, 1):
        p = json.loads(json.dumps(base))          # deep copy of plain YAML data
        for k, v in point.items():
            if "." in k:
                sec, key = k.split(".", 1)
                p.setdefault(sec, {})[key] = v
            else:
                p[k] = v
        sets.append((f"set{i:02d}", p))
    return sets


def load_grid(path: str | os.PathLike) -> dict | list:
    """Read a grid YAML: ``name: [values]`` (Cartesian product) or a list of sets.

    A list may also sit under a top-level ``sets:`` key.
    """
    from .io import read_yaml
    p = Path(path)
    grid = read_yaml(p, "grid file")
    if isinstance(grid, dict) and list(grid) == ["sets"]:
        grid = grid["sets"]
    if not grid or not isinstance(grid, (dict, list)):
        raise InputError(f"{p}: a grid is a mapping of name: [values] or a list of "
                         "parameter sets.")
    return grid


def plan(fields: Sequence[Path], sets: Sequence[tuple[str, dict]], out: str | os.PathLike,
         mode: str = "segment", threads: int = 1, only: Sequence[str] | None = None
         ) -> list[Task]:
    """One :class:`Task` per field x parameter set."""
    if mode not in ("segment", "notebooks"):
        raise InputError(f"mode must be 'segment' or 'notebooks', got {mode!r}.")
    if mode == "segment":
        for name, p in sets:
            bad = set(p) - set(SEGMENT_DEFAULTS)
            if bad:
                raise InputError(f"parameter set {name}: {sorted(bad)} not used by --mode "
                                 f"segment; it takes {sorted(SEGMENT_DEFAULTS)}.")
            det = p.get("detector")
            if det and not Path(det).is_file():
                raise InputError(f"parameter set {name}: detector {det} not found; give the "
                                 "path of a marker detector saved by cellnb markers --phase "
                                 "... --save-detector.")
        # a relative detector path means where the command runs, not the worker's folder
        sets = [(name, {**p, "detector": str(Path(p["detector"]).resolve())})
                if p.get("detector") else (name, p) for name, p in sets]
    return [Task(run_id=f"{f.name}__{name}", field=str(Path(f).resolve()), set_name=name,
                 params=p, mode=mode, out=str(Path(out).resolve()), threads=threads,
                 only=list(only) if only else None)
            for f in fields for name, p in sets]


# --------------------------------------------------------------------------
# one run (executed on a Dask worker)
# --------------------------------------------------------------------------
def thread_limits(threads: int) -> dict[str, str]:
    """The environment variables that cap TensorFlow's, OpenMP's and BLAS's threads.

    One list for the workers (:func:`_limit_threads`), the cluster start
    (:func:`_client`) and the tests that check none of them leaks.
    """
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": "1"}


def _limit_threads(threads: int) -> None:
    """Cap the backend's and BLAS threads in this process and in kernels it starts."""
    os.environ.update(thread_limits(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .train import backend
    if backend() == "tensorflow":
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # this worker already ran TensorFlow with the same settings
    elif backend() == "torch":
        import torch
        torch.set_num_threads(threads)


def _headline(field, labels: dict) -> dict:
    """Cells found and (with ground truth) mIOU of each label image."""
    from .metrics import matched_iou
    out = {}
    for cfg, lab in labels.items():
        out[f"cells[{cfg}]"] = int(len(np.unique(lab[lab > 0])))
        if field.cells is not None:
            out[f"mIOU[{cfg}]"] = round(matched_iou(field.cells, lab)["mean"], 4)
    return out


def _train_config(p: dict):
    """TrainConfig of a segment-mode parameter set.

    On a cluster whose workers are different machines, set ``precision:
    float32``: with ``auto`` each worker picks what its own hardware runs best.
    """
    from .train import TrainConfig
    return TrainConfig(max_steps=int(p["steps"]), seed=int(p["seed"]),
                       precision=str(p["precision"]))


def _detector(p: dict):
    """The parameter set's saved marker detector (phase-contrast fields without clicks), or None."""
    if not p.get("detector"):
        return None
    from .synthetic_nuclei import load_nucleus_model
    return load_nucleus_model(p["detector"], role="marker detector")[0]


def _segment_run(task: Task, folder: Path) -> dict:
    from . import integrate, pipeline, train
    from .datasets import load_field
    from .io import write_labels, write_table
    p = {**SEGMENT_DEFAULTS, **task.params}
    field = load_field(task.field)
    cfg = _train_config(p)
    configs = [p["configs"]] if isinstance(p["configs"], str) else list(p["configs"])
    model, detector = None, _detector(p)
    if task.model:
        model = train.load_model(task.model)[0]
        if len(configs) != 1:
            raise InputError("a shared model (--train-on) is trained for one input set; give "
                             "one entry in configs.")
    labels, warnings = {}, []
    for c in configs:
        res = pipeline.segment_field(field, pipeline.config_channels(c), config=cfg,
                                     model=model, patch_size=p["patch_size"], progress=False,
                                     log=lambda s: None, background=str(p["background"]),
                                     threshold=float(p["threshold"]), detector=detector)
        lab = res.labels
        write_labels(folder / f"labels__{c}.tif", lab)
        write_table(folder / f"cells__{c}.csv",
                    integrate.cell_table(lab, res.markers, field.images))
        labels[c] = lab
        if res.warning:
            warnings.append(f"{c}: {res.warning}")
    head = _headline(field, labels)
    if warnings:          # the index marks the run in its warning column
        head["warning"] = " | ".join(warnings)
    return head


def _notebooks_run(task: Task, folder: Path) -> dict:
    from .datasets import load_field
    from .io import read_labels
    from .runner import run_notebooks
    field = Path(task.field)
    p = json.loads(json.dumps(task.params))
    # this run sees exactly one field: override every `fields` setting
    p["data_dir"], p["fields"] = str(field.parent), [field.name]
    for v in p.values():
        if isinstance(v, dict):
            v.pop("fields", None)
            v.pop("data_dir", None)
    p.setdefault("unseen_model_field", None)   # 06's cross-field test needs two fields
    run_notebooks(folder, p, only=task.only, log=lambda s: None)
    labels = {f.stem.split("__", 1)[1]: read_labels(f) for f in
              sorted((folder / "labels").glob(f"{field.name}__*.tif"))
              if "__model-" not in f.stem and "synthetic-markers" not in f.stem}
    return _headline(load_field(field), labels)


def run_task(task: Task) -> dict:
    """Run one field x parameter set; never raises.

    Outputs go to ``.partial/<run_id>.<attempt>``; on success ``result.json`` is
    written there last and the folder is moved to ``runs/<run_id>``; on
    failure the partial folder (with ``error.txt``) moves to
    ``failed/<run_id>``.

    Returns
    -------
    dict
        One index row: run, field, set, status, seconds, model, error and
        the headline metrics.
    """
    out = Path(task.out)
    # one folder per attempt: a run redone after its worker was lost (or after the batch
    # command was killed while a worker still ran it) never writes into another attempt's
    # files; the last attempt to finish is moved into place whole
    tmp = out / ".partial" / f"{task.run_id}.{os.getpid()}.{time.time_ns()}"
    tmp.mkdir(parents=True)
    row = {"run": task.run_id, "field": Path(task.field).name, "set": task.set_name,
           "status": "failed", "seconds": 0.0,
           "model": Path(task.model).name if task.model else "own", "error": ""}
    t0 = time.perf_counter()
    try:
        _limit_threads(task.threads)
        (tmp / "params.json").write_text(json.dumps(task.params, indent=1) + "\n")
        headline = (_segment_run if task.mode == "segment" else _notebooks_run)(task, tmp)
        row.update(status="done", seconds=round(time.perf_counter() - t0, 1), **headline)
        (tmp / "result.json").write_text(json.dumps(row, indent=1) + "\n")
        dest = out / "runs" / task.run_id
    except Exception as exc:       # a failed run is recorded, never stops the batch
        row.update(seconds=round(time.perf_counter() - t0, 1),
                   error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        (tmp / "error.txt").write_text(traceback.format_exc())
        dest = out / "failed" / task.run_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.parent / f".old.{tmp.name}"
    try:
        os.replace(dest, old)          # a finished run is swapped, never half-removed
    except FileNotFoundError:
        pass
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    if row["status"] == "done":
        shutil.rmtree(out / "failed" / task.run_id, ignore_errors=True)
    return row


def train_shared(fields: Sequence[str], params: dict, path: str, threads: int = 1) -> str:
    """Train one model on the patches of several fields (``--train-on K``); returns its path.

    The fields' patch sets are laid side by side (:func:`cellnb.patches.concat`),
    so a training batch still holds the patches of one area of one field.
    """
    from . import patches, pipeline, train
    from .datasets import load_field
    from .mask import foreground_mask
    _limit_threads(threads)
    p = {**SEGMENT_DEFAULTS, **params}
    configs = [p["configs"]] if isinstance(p["configs"], str) else list(p["configs"])
    if len(configs) != 1:
        raise InputError("--train-on trains one shared model per parameter set: give exactly "
                         "one entry in configs.")
    chans = pipeline.config_channels(configs[0])
    sets, detector = [], _detector(p)
    for f in map(load_field, fields):
        mk = pipeline.field_markers(f, seed=int(p["seed"]), detector=detector)
        cell = [c for c in chans if c != "nucleus"]
        m = foreground_mask(f.stack(cell), [pipeline.modality_of(c) for c in cell], markers=mk,
                            hint=f.hint)
        sets.append(pipeline.field_patches(f, chans, mk, m, p["patch_size"]))
    size = max(s.size for s in sets)
    if any(s.size != size for s in sets):
        raise InputError("--train-on: the sampled fields need different patch sizes (cells of "
                         "different size); set patch_size in the parameters.")
    res = train.train(patches.concat(sets), _train_config(p), progress=False, channels=chans)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    train.save_model(res, path)
    return path


# --------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------
INDEX_COLUMNS = ["run", "field", "set", "status", "seconds", "model", "error", "warning"]


def write_index(out: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write ``index.csv`` and ``index.md`` (atomically), runs sorted by id."""
    from .io import write_table
    rows = sorted(rows, key=lambda r: r["run"])
    extra = sorted({k for r in rows for k in r} - set(INDEX_COLUMNS))
    cols = INDEX_COLUMNS + extra
    table = [{c: r.get(c, "") for c in cols} for r in rows]
    return write_table(Path(out) / "index.csv", table, markdown=True)


def _client(workers: int, scheduler: str | None, threads: int):
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler), None
    # worker processes inherit these, so TensorFlow never starts more threads; the caller's
    # own environment is put back (a notebook that ran a batch and then trains keeps its
    # threads: with one thread the bfloat16 training takes other rounding paths)
    limits = dict(thread_limits(threads),
                  TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    before = {k: os.environ.get(k) for k in limits}
    os.environ.update(limits)
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Client(cluster), cluster


def run_batch(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
              params: dict | None = None, grid: dict | list | None = None,
              mode: str = "segment", workers: int = 1, scheduler: str | None = None,
              threads: int | None = None, force: bool = False, train_on: int = 0,
              only: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
              log: Callable[[str], None] | None = None) -> list[dict]:
    """Run every field x parameter set; resumable.

    Parameters
    ----------
    sources : sequence of path-like
        Plate folders, field folders or list files (:func:`discover_fields`).
    out : path-like
        The batch folder (module docstring).
    params : dict, optional
        Base parameters: a runner YAML for notebooks mode, or the keys of
        ``SEGMENT_DEFAULTS`` for segment mode.
    grid : dict or list, optional
        Parameter grid (:func:`parameter_sets`).
    mode : {"segment", "notebooks"}
    workers : int
        Local worker processes (ignored with `scheduler`).
    scheduler : str, optional
        Address of an existing Dask scheduler.
    threads : int, optional
        TensorFlow threads per run; default cores / workers.
    force : bool
        Redo finished runs.
    train_on : int
        Segment mode: train one model per parameter set on this many
        randomly chosen fields (seeded) and apply it to every field.
    only : sequence of str, optional
        Notebooks mode: notebooks to run (default all but 02, whose
        training needs several fields).
    seed : int
        Seed for choosing the `train_on` fields.
    progress : bool
        Progress bar (stderr).

    Returns
    -------
    list of dict
        The index rows (also written to ``index.csv`` / ``index.md``).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if int(workers) < 1:
        raise InputError(f"--workers must be >= 1, got {workers}.")
    if train_on and mode != "segment":
        raise InputError("--train-on works with --mode segment.")
    fields = discover_fields(sources)
    if train_on < 0 or train_on > len(fields):
        raise InputError(f"--train-on {train_on}: choose between 1 and the {len(fields)} fields.")
    sets = parameter_sets(params or {}, grid)
    threads = int(threads or max(1, (os.cpu_count() or 1) // int(workers)))
    if mode == "notebooks" and only is None:
        only = ["01", "03", "04", "05", "06"]
    tasks = plan(fields, sets, out, mode, threads, only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, todo = {}, []
    for t in tasks:
        done = out / "runs" / t.run_id / "result.json"
        if done.exists() and not force:
            rows[t.run_id] = {**json.loads(done.read_text()), "status": "done (earlier)"}
        else:
            todo.append(t)
    log(f"[cellnb] batch: {len(fields)} field(s) x {len(sets)} parameter set(s) = "
        f"{len(tasks)} runs; {len(tasks) - len(todo)} already done, {len(todo)} to run on "
        f"{'scheduler ' + scheduler if scheduler else f'{workers} local worker(s)'}")
    write_index(out, list(rows.values()))
    if not todo:
        return list(rows.values())
    client, cluster = _client(int(workers), scheduler, threads)
    try:
        shared = {}
        if train_on:
            rng = np.random.default_rng(seed)
            for name, p in sets:
                if not any(t.set_name == name for t in todo):
                    continue
                pick = sorted(rng.choice(len(fields), train_on, replace=False))
                path = str((out / "models" / f"{name}.keras").resolve())
                shared[name] = client.submit(train_shared, [str(fields[i]) for i in pick], p,
                                             path, threads, pure=False)
        futures = []
        for t in todo:
            if t.set_name in shared:
                futures.append(client.submit(_with_model, t, shared[t.set_name], pure=False))
            else:
                futures.append(client.submit(run_task, t, pure=False))
        from distributed import as_completed
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(futures), desc="batch", unit="run", file=sys.stderr)
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as exc:     # e.g. the shared model failed to train
                t = todo[futures.index(fut)]
                row = {"run": t.run_id, "field": Path(t.field).name, "set": t.set_name,
                       "status": "failed", "seconds": 0.0, "model": "shared",
                       "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            rows[row["run"]] = row
            write_index(out, list(rows.values()))     # up to date even if interrupted
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=sum(r["status"] == "failed" for r in rows.values()))
        if bar is not None:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    shutil.rmtree(out / ".partial", ignore_errors=True)
    return sorted(rows.values(), key=lambda r: r["run"])


def _with_model(task: Task, model_path: str) -> dict:
    """Run a task with the shared model (Dask passes the trained model's path)."""
    task.model = model_path
    return run_task(task)
