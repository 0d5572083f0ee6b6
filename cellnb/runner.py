"""Run the numbered notebook series headlessly with papermill.

One YAML parameter file drives the whole series. Its top-level keys are
parameters shared by every notebook that declares them (in its cell tagged
``parameters``); a key named after a notebook (``04_train`` or just
``"04"``) holds overrides for that notebook alone::

    data_dir: null          # null = the bundled demo fields
    fields: [field_01]
    04_train:
      steps: 200

Each notebook receives only the parameters it declares, plus ``out_dir``
(the run folder). Folder parameters (``data_dir``, ``pretrained``) given as
relative paths are relative to where the command runs, not to the notebook
folder. A key that no notebook declares is an error (a typo
would otherwise be silently ignored). Executed copies are written to the
run folder as ``NN_name.ipynb``; a failing notebook stops the run with its
name and the error, and its partially executed copy stays for inspection.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from .io import InputError
from .train import PROGRESS_ENV

__all__ = ["NotebookFailed", "notebooks_dir", "find_notebooks", "load_params",
           "params_for", "check_params", "run_notebooks"]

_NB = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook of the series raised; the message names it and the error."""


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def find_notebooks(folder: str | Path | None = None,
                   only: Sequence[str] | None = None) -> list[Path]:
    """Numbered notebooks ``NN_name.ipynb`` in order, optionally only some.

    Parameters
    ----------
    folder : path-like, optional
        Default: :func:`notebooks_dir`.
    only : sequence of str, optional
        Numbers (``"01"``) or stems (``"01_markers"``) to keep.
    """
    folder = Path(folder) if folder else notebooks_dir()
    nbs = sorted(p for p in folder.glob("*.ipynb") if _NB.match(p.name))
    if not nbs:
        raise InputError(f"{folder}: no numbered notebooks (NN_name.ipynb) found.")
    if only:
        want = {str(o) for o in only}
        keep = [p for p in nbs if p.stem in want or p.name[:2] in want]
        unknown = want - {p.stem for p in keep} - {p.name[:2] for p in keep}
        if unknown:
            raise InputError(f"--only {sorted(unknown)}: no such notebook; available: "
                             f"{[p.stem for p in nbs]}.")
        nbs = keep
    return nbs


def load_params(path: str | Path | None) -> dict:
    """Read a YAML parameter file into a dict (empty for None)."""
    if path is None:
        return {}
    from .io import read_yaml
    p = Path(path)
    data = read_yaml(p) or {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: the parameter file must be a mapping of name: value.")
    return data


#: parameters that name folders: relative values are resolved against the caller's directory
PATH_PARAMS = ("data_dir", "pretrained")


def resolve_paths(params: dict, cwd: str | Path | None = None) -> dict:
    """A copy of `params` with relative folder parameters made absolute (also in sections)."""
    base = Path(cwd or os.getcwd())

    def fix(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out[k] = fix(v)
            elif k in PATH_PARAMS and isinstance(v, str) and v and not Path(v).is_absolute():
                out[k] = str((base / v).resolve())
            else:
                out[k] = v
        return out
    return fix(params)


def _declared(nb: Path) -> dict:
    """The notebook's parameters cell (papermill), read once per file version: the command
    line checks a parameter set before :func:`run_notebooks` plans the same run."""
    st = Path(nb).stat()
    return _inspect(str(Path(nb).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int, size: int) -> dict:
    import papermill as pm
    return pm.inspect_notebook(path)


def _is_section(key: str, stems: Sequence[str]) -> bool:
    return any(key == s or key == s[:2] for s in stems)


def params_for(nb: Path, params: dict, declared: dict | None = None) -> dict:
    """The parameters one notebook receives: shared keys it declares, then its section."""
    declared = _declared(nb) if declared is None else declared
    out = {k: v for k, v in params.items() if k in declared and not isinstance(v, dict)}
    for key in (nb.stem, nb.stem[:2]):
        section = params.get(key)
        if isinstance(section, dict):
            bad = set(section) - set(declared)
            if bad:
                raise InputError(f"parameters for {nb.stem}: {sorted(bad)} not declared by the "
                                 f"notebook; it takes {sorted(declared)}.")
            out.update(section)
    for k, v in out.items():
        _check_type(nb, k, v, declared[k])
    return out


def check_params(params: dict | str | Path | None = None, only: Sequence[str] | None = None,
                 folder: str | Path | None = None) -> dict:
    """Check a parameter set against the notebooks before any of them runs.

    Unknown keys, sections for notebooks that do not declare a key, and values
    of the wrong kind (a string where the notebook's default is a number, a
    number where it expects a list of field names...) are refused.

    Returns
    -------
    dict
        Notebook path -> the parameters it will receive.
    """
    return _plan(params, only, folder)[0]


def _plan(params, only, folder):
    if not isinstance(params, dict):
        params = load_params(params)
    params = resolve_paths(params)
    all_nbs = find_notebooks(folder)
    nbs = find_notebooks(folder, only)
    declared = {nb: _declared(nb) for nb in all_nbs}
    stems = [nb.stem for nb in all_nbs]
    known = set().union(*declared.values())
    unknown = [k for k in params if not _is_section(k, stems) and k not in known]
    if unknown:
        raise InputError(f"unknown parameter(s) {unknown}; the notebooks declare "
                         f"{sorted(known)}.")
    return {nb: params_for(nb, params, declared[nb]) for nb in nbs}, declared


# Kinds of the parameters whose notebook default is None (no kind to infer from).
NONE_DEFAULT_KINDS = {"data_dir": (str,), "pretrained": (str,), "fields": (list,),
                      "smoothness": (int, float), "patch_size": (int,)}


def _check_type(nb: Path, name: str, value, decl: dict) -> None:
    """`value` has the kind of the notebook's default for `name` (None and unparsable defaults
    accept anything; an int is a fine float; a bool is not an int)."""
    import ast
    try:
        default = ast.literal_eval(str(decl.get("default")))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return
    if value is None:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, tuple),
             tuple: (list, tuple), dict: (dict,)}
    want = NONE_DEFAULT_KINDS.get(name) if default is None else kinds.get(type(default))
    if name == "fields" and isinstance(value, list) and not all(isinstance(v, str)
                                                                for v in value):
        raise InputError(f"parameter 'fields' of {nb.stem}: expected a list of field names, "
                         f"got {value!r}.")
    ok = want is None or (isinstance(value, want) and
                          not (isinstance(value, bool) and bool not in want))
    if not ok:
        like = f"like its default {default!r}" if default is not None else \
            f"({' or '.join(k.__name__ for k in want)})"
        raise InputError(f"parameter {name!r} of {nb.stem}: expected "
                         f"{type(default).__name__ if default is not None else 'a value'} "
                         f"{like}, got {type(value).__name__} {value!r}.")


def run_notebooks(out_dir: str | Path, params: dict | str | Path | None = None,
                  only: Sequence[str] | None = None, folder: str | Path | None = None,
                  kernel_name: str = "python3", log: Callable[[str], None] | None = None,
                  ) -> list[Path]:
    """Execute the numbered notebooks in order into `out_dir`.

    Parameters
    ----------
    out_dir : path-like
        Run folder; executed notebooks and every step's results go there.
    params : dict or path-like, optional
        Parameters, or a YAML file of them (see module docstring).
    only : sequence of str, optional
        Run only these notebooks (numbers or stems).
    folder : path-like, optional
        Notebook folder (default: the repository's ``notebooks/``).
    kernel_name : str
        Jupyter kernel; ``python3`` is this Python.
    log : callable, optional
        Receives one progress line per notebook (default: stderr).

    Returns
    -------
    list of Path
        Executed notebooks.

    Raises
    ------
    NotebookFailed
        When a notebook raises; earlier results stay in `out_dir`.
    """
    import papermill as pm
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    per_nb, declared = _plan(params, only, folder)       # every notebook's parameters checked
    nbs = list(per_nb)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the 'python3' kernel launches `python` from PATH: make it this interpreter
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # figures inline in the executed notebooks (what a student reads, and the course site)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")   # kernel debugger chatter
    done = []
    with quiet_stderr(), tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress.log"
        progress.touch()
        os.environ[PROGRESS_ENV] = str(progress)   # trainings in the kernel report here
        try:
            for nb in nbs:
                p = per_nb[nb]
                if "out_dir" in declared[nb]:
                    p["out_dir"] = str(out)
                dest = out / nb.name
                log(f"[cellnb] running {nb.name} -> {dest}")
                t0 = time.perf_counter()
                with _relay(progress, lambda s: log(f"[cellnb]   {s}")):
                    try:
                        pm.execute_notebook(str(nb), str(dest), parameters=p,
                                            kernel_name=kernel_name, cwd=str(nb.parent),
                                            progress_bar=False, log_output=False)
                    except pm.PapermillExecutionError as exc:
                        raise NotebookFailed(
                            f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: "
                            f"{exc.evalue}\n  partially executed copy: {dest}") from None
                log(f"[cellnb] {nb.name} done in {time.perf_counter() - t0:.0f} s")
                done.append(dest)
        finally:
            os.environ.pop(PROGRESS_ENV, None)
    return done


# Lines a kernel or framework prints that tell the user nothing: dropped from the
# terminal. Everything else (real warnings and errors) passes through.
NOISE = re.compile(
    r"Kernel is running over TCP without encryption|Debugger warning|frozen modules"
    r"|PYDEVD_DISABLE_FILE_VALIDATION|-Xfrozen_modules|oneDNN custom operations"
    r"|TF_ENABLE_ONEDNN_OPTS|To enable the following instructions|rebuild TensorFlow"
    r"|oneDNN supports DT_|KeyboardInterrupt caught in kernel"   # the shutdown interrupt
    r"|This TensorFlow binary is optimized|cuda drivers on your machine"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|absl::InitializeLog"
    r"|computation_placer|All log messages before absl|^\s*$")


@contextmanager
def quiet_stderr():
    """Filter this process's stderr (fd 2, which kernels it starts inherit) through :data:`NOISE`.

    Line-based, so only for stretches without a progress bar (one that redraws a line
    with carriage returns would show only when the line ends).
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):     # e.g. pytest's captured stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)

    def pump():
        with os.fdopen(r, "rb") as src:
            for line in src:
                if not NOISE.search(line.decode(errors="replace")):
                    os.write(saved, line)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)        # closes the pipe's last write end in this process
        t.join(timeout=5)
        os.close(saved)


@contextmanager
def _relay(path: Path, log: Callable[[str], None], poll: float = 1.0):
    """Pass lines appended to `path` (by :class:`cellnb.train.StepReport`) to `log`."""
    stop = threading.Event()
    pos = [path.stat().st_size]

    def drain():
        with open(path) as fh:
            fh.seek(pos[0])
            for line in fh.read().splitlines():
                log(line)
            pos[0] = fh.tell()

    def loop():
        while not stop.wait(poll):
            drain()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        drain()
