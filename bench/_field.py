"""A cached 1750x1750 synthetic field (the paper's field size) for the benchmarks."""
from pathlib import Path

from cellnb import datasets

CACHE = Path(__file__).resolve().parent / ".cache" / "field_1750"


def field_1750():
    """Generate once (about a minute), then load from bench/.cache."""
    if not (CACHE / "meta.json").exists():
        datasets.save_field(datasets.make_field((1750, 1750), seed=1750, mean_radius=16,
                                                name="field_1750"), CACHE)
    return datasets.load_field(CACHE)
