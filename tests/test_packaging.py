"""environment.yml (conda) describes the same environment as pyproject.toml (pip, used by make)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: pip names whose conda-forge package is called otherwise
CONDA_NAME = {"tensorflow-cpu": "tensorflow", "dask": "dask-core"}


def _spec(req: str) -> tuple[str, str]:
    """``"jax[cpu]>=0.4.30; marker"`` -> ``("jax", ">=0.4.30")``, the name as conda calls it."""
    m = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*([<>=!~][^;]*)?", req.split(";")[0])
    name = m.group(1).lower()
    return CONDA_NAME.get(name, name), (m.group(3) or "").strip()


def test_environment_yml_lists_what_pyproject_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # make's environment: the dependencies and the extras the make targets install (not torch)
    pip = dict(_spec(r) for r in project["dependencies"] + extras["test"] + extras["jax"]
               + extras["browser"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_spec(d) for d in env["dependencies"] if isinstance(d, str)
                 and not d.startswith(("python", "pip")))
    assert conda == pip
    assert {"pip": ["-e ."]} in env["dependencies"]
