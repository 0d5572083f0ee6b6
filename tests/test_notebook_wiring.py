"""Every notebook's wiring, in seconds (the executed runs are in test_notebooks.py, slow).

Static checks of what a *Run All* would meet first: every code cell compiles, every
``cellnb`` function or class a notebook calls exists, with the keyword arguments it is
given, and every parameter file of the series names only parameters the notebooks declare,
with the kinds they expect.
"""
import ast
import importlib
import inspect

import nbformat
import pytest

from cellnb import runner

NOTEBOOKS = sorted(runner.notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
YAMLS = sorted(runner.notebooks_dir().glob("*.yaml"))


def _code(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_series_is_complete():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]
    assert {p.name for p in YAMLS} >= {"demo.yaml", "demo_real.yaml", "full.yaml"}


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_compile_and_call_what_the_package_has(nb_path):
    modules, calls = {}, 0
    for i, src in enumerate(_code(nb_path)):
        tree = ast.parse(src, filename=f"{nb_path.name} cell {i}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "cellnb":
                for alias in node.names:
                    modules[alias.asname or alias.name] = importlib.import_module(
                        f"cellnb.{alias.name}")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                continue
            mod = modules[node.value.id]
            assert hasattr(mod, node.attr), f"{nb_path.name}: cellnb.{node.value.id}." \
                                            f"{node.attr} does not exist"
            calls += 1
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in modules):
                fn = getattr(modules[node.func.value.id], node.func.attr)
                params = inspect.signature(fn).parameters
                if any(p.kind == p.VAR_KEYWORD for p in params.values()):
                    continue
                for kw in node.keywords:
                    assert kw.arg is None or kw.arg in params, \
                        f"{nb_path.name}: {node.func.attr}() takes no argument {kw.arg!r}"
    assert modules and calls > 3, f"{nb_path.name} calls nothing of cellnb"


@pytest.mark.parametrize("yaml_path", YAMLS, ids=lambda p: p.name)
def test_parameter_files_match_the_notebooks(yaml_path):
    only = ["01", "03", "04", "05", "06"] if yaml_path.name == "demo_real.yaml" else None
    runner.check_params(yaml_path, only=only)


def test_classroom_defaults_are_classroom_sized():
    """Run All with a notebook's own defaults trains one small model at most (issue 18)."""
    for nb_path in NOTEBOOKS:
        p = {k: ast.literal_eval(v["default"]) for k, v in runner._declared(nb_path).items()
             if k not in ("out_dir",)}
        if "configs" in p:
            assert len(p["configs"]) == 1 and p["steps"] <= 200, nb_path.name
            assert p["fields"] is not None and len(p["fields"]) == 1, nb_path.name
    p02 = runner._declared(runner.notebooks_dir() / "02_synthetic_nuclei.ipynb")
    pretrained = ast.literal_eval(p02["pretrained"]["default"])
    assert (runner.notebooks_dir() / pretrained / "nuclei__fluorescence.keras").exists()
