"""A cached 1750x1750 synthetic field for the benchmarks.

The paper's fields are 1750x1750 px at 20x with A431 cells ~40-50 px across
(~1000-1500 cells at 70% confluence): mean radius 22 px gives about that.
"""
from pathlib import Path

from cellnb import datasets

CACHE = Path(__file__).resolve().parent / ".cache" / "field_1750_r22"


def field_1750():
    """Generate once (about a minute), then load from bench/.cache."""
    if not (CACHE / "meta.json").exists():
        datasets.save_field(datasets.make_field((1750, 1750), seed=1750, mean_radius=22,
                                                name="field_1750"), CACHE)
    return datasets.load_field(CACHE)
