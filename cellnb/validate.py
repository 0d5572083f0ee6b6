"""Check a command's arguments, paths and output locations before any expensive step.

A training takes minutes; an output path that cannot be written (a folder,
one of the inputs, a file in a folder that cannot be created) must be
refused before it starts, not after. The commands of ``python -m cellnb``
call :func:`check_outputs` and :func:`check_inputs` first; every problem is
an :class:`~cellnb.io.InputError` naming the argument and the fix.
File formats and their readers stay in :mod:`cellnb.io`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .io import InputError

__all__ = ["check_inputs", "check_outputs", "check_number", "check_out_folder",
           "memory_available"]


def memory_available() -> int:
    """Bytes of memory available to this process now (Linux ``MemAvailable``; else total)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 ** 34


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable_parent(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` if it is a writable folder, else None."""
    p = path.absolute().parent
    while not p.exists():
        p = p.parent
    return p if p.is_dir() and os.access(p, os.W_OK | os.X_OK) else None


def check_inputs(files: Mapping[str, str | os.PathLike | Sequence | None],
                 folders: bool = False) -> None:
    """Every named input exists and is a readable file (or folder, with `folders`).

    Parameters
    ----------
    files : mapping of argument name -> path, list of paths or None
        ``{"--image": ["a.tif"], "--mask": None}``; None entries are skipped.
    folders : bool
        Accept folders as well as files (field folders, plates).
    """
    for arg, paths in files.items():
        if paths is None:
            continue
        for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
            p = Path(p)
            if not p.exists():
                raise InputError(f"{arg} {p}: no such file; check the path.")
            if p.is_dir() and not folders:
                raise InputError(f"{arg} {p}: is a folder; give a file.")
            if not os.access(p, os.R_OK):
                raise InputError(f"{arg} {p}: cannot be read (permissions); fix its "
                                 "permissions or copy it.")


def check_outputs(outputs: Mapping[str, tuple[str | os.PathLike | None, Sequence[str]]],
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Every output can be written and overwrites no input and no other output.

    Parameters
    ----------
    outputs : mapping of argument name -> (path or None, allowed suffixes)
        ``{"--out": ("labels.tif", (".tif", ".tiff"))}``; None paths are skipped.
        A ``.keras`` model also writes its ``.json`` beside it; both are checked.
    inputs : iterable of path-like
        Files (or folders) the command reads: an output may be none of them
        and may not lie inside an input folder's ``.keras`` / image files.
    """
    ins = [Path(p) for p in inputs if p is not None]
    seen: dict[Path, str] = {}
    for arg, (path, suffixes) in outputs.items():
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{arg} {path}: is a folder; give a file name inside it, "
                             f"e.g. {path / ('out' + (suffixes[0] if suffixes else ''))}.")
        if suffixes and path.suffix.lower() not in suffixes:
            raise InputError(f"{arg} {path}: must end in {' or '.join(suffixes)}.")
        targets = [path] + ([path.with_suffix(".json")] if path.suffix == ".keras" else [])
        for t in targets:
            if t.is_dir():
                raise InputError(f"{arg} {t}: is a folder; give a file name inside it, "
                                 f"e.g. {t / ('out' + (suffixes[0] if suffixes else ''))}.")
            for i in ins:
                if _same(t, i) or t.absolute() == i.absolute():
                    raise InputError(f"{arg} {t}: is one of the inputs; refusing to overwrite "
                                     "an input file; choose another output path.")
            key = Path(os.path.abspath(t))
            if key in seen:
                raise InputError(f"{arg} {t}: is also the {seen[key]} output; give each "
                                 "output its own path.")
            seen[key] = arg
            if t.exists() and not os.access(t, os.W_OK):
                raise InputError(f"{arg} {t}: exists and cannot be written (permissions).")
            if _writable_parent(t) is None:
                raise InputError(f"{arg} {t}: its folder cannot be created or written; "
                                 "choose a writable location.")


def check_out_folder(arg: str, path: str | os.PathLike,
                     inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """A run / batch folder: not an existing file, not an input folder, creatable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{arg} {path}: is a file; give a folder for the results.")
    for i in (Path(p) for p in inputs if p is not None):
        if _same(path, i) or path.absolute() == i.absolute():
            raise InputError(f"{arg} {path}: is an input folder; write the results to a "
                             "folder of their own.")
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{arg} {path}: cannot be written (permissions).")
    if not path.exists() and _writable_parent(path / "x") is None:
        raise InputError(f"{arg} {path}: cannot be created here; choose a writable location.")


def check_number(arg: str, value, low=None, high=None, integer: bool = False,
                 open_low: bool = False, open_high: bool = False) -> None:
    """`value` is a finite number within [low, high] (open ends where asked)."""
    import math
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (not integer or int(value) == value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        rng = f"{'(' if open_low else '['}{'-inf' if low is None else low}, " \
              f"{'inf' if high is None else high}{')' if open_high else ']'}"
        raise InputError(f"{arg} {value}: must be {'an integer' if integer else 'a number'} "
                         f"in {rng}.")
