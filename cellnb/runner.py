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

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from .io import InputError

__all__ = ["NotebookFailed", "notebooks_dir", "find_notebooks", "load_params",
           "params_for", "run_notebooks"]

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
    import yaml
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: parameter file not found.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc}).") from None
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
    import papermill as pm
    return pm.inspect_notebook(str(nb))


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
    return out


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
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the 'python3' kernel launches `python` from PATH: make it this interpreter
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    done = []
    for nb in nbs:
        p = params_for(nb, params, declared[nb])
        if "out_dir" in declared[nb]:
            p["out_dir"] = str(out)
        dest = out / nb.name
        log(f"[cellnb] running {nb.name} -> {dest}")
        try:
            pm.execute_notebook(str(nb), str(dest), parameters=p, kernel_name=kernel_name,
                                cwd=str(nb.parent), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            raise NotebookFailed(f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: "
                                 f"{exc.evalue}\n  partially executed copy: {dest}") from None
        done.append(dest)
    return done
