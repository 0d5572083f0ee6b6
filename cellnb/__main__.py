"""Command line: ``python -m cellnb <command>`` (also installed as ``cellnb``).

Commands
--------
run-notebooks   run the numbered notebook series with papermill
make-demo-data  regenerate the bundled synthetic demo fields
markers         write marker positions (CSV) from a nucleus image
"""
from __future__ import annotations

import argparse
import sys
import time

from .io import InputError

__all__ = ["main"]


def _cmd_run_notebooks(a) -> int:
    from .runner import run_notebooks
    t0 = time.perf_counter()
    done = run_notebooks(a.out, a.params, only=a.only, folder=a.notebooks)
    print(f"ran {len(done)} notebook(s) into {a.out} in {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_make_demo(a) -> int:
    from .datasets import DEMO_FIELDS, write_demo_data
    out = write_demo_data(a.out, a.fields or list(DEMO_FIELDS))
    print(f"wrote demo fields to {out}")
    return 0


def _cmd_markers(a) -> int:
    from .io import read_image, write_markers
    from .markers import find_markers
    m = find_markers(read_image(a.nucleus), sigma=a.sigma)
    write_markers(a.out, m)
    print(f"{len(m)} markers -> {a.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cellnb", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run-notebooks", help="run the numbered notebooks with papermill")
    p.add_argument("--params", help="YAML parameter file")
    p.add_argument("--out", required=True, help="run folder for executed notebooks and results")
    p.add_argument("--only", nargs="+", help="notebook numbers or names to run (default: all)")
    p.add_argument("--notebooks", help="notebook folder (default: the repository's)")
    p.set_defaults(func=_cmd_run_notebooks)

    p = sub.add_parser("make-demo-data", help="regenerate the synthetic demo fields")
    p.add_argument("--out", default="data/demo")
    p.add_argument("--fields", nargs="+", help="subset of demo field names")
    p.set_defaults(func=_cmd_make_demo)

    p = sub.add_parser("markers", help="marker CSV from a nucleus image")
    p.add_argument("--nucleus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sigma", type=float, default=1.0)
    p.set_defaults(func=_cmd_markers)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return a.func(a)
    except InputError as exc:
        print(f"cellnb: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .runner import NotebookFailed
        if isinstance(exc, NotebookFailed):
            print(f"cellnb: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
