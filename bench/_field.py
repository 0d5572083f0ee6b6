"""Shared pieces of the benchmarks: a cached paper-sized field, TrainConfig overrides, table rows.

The paper's fields are 1750x1750 px at 20x with A431 cells ~40-50 px across
(~1000-1500 cells at 70% confluence): mean radius 22 px gives about that.
"""
import dataclasses
from pathlib import Path

from cellnb import datasets, train

CACHE = Path(__file__).resolve().parent / ".cache" / "field_1750_r22"


def field_1750():
    """Generate once (about a minute), then load from bench/.cache."""
    if not (CACHE / "meta.json").exists():
        datasets.save_field(datasets.make_field((1750, 1750), seed=1750, mean_radius=22,
                                                name="field_1750"), CACHE)
    return datasets.load_field(CACHE)


def train_overrides(pairs, error) -> dict:
    """``["depth=4", "beta=3"]`` -> ``{"depth": 4, "beta": 3.0}`` for TrainConfig.

    `error` is called with a message for an unknown key (``argparse``'s
    ``parser.error``).
    """
    types = {f.name: f.type for f in dataclasses.fields(train.TrainConfig)}   # types as str
    out = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        if k not in types or not _:
            error(f"--set {kv}: expected KEY=VALUE with KEY a TrainConfig field "
                  f"({', '.join(types)})")
        if types[k] in ("int | str", "float | str"):    # warmup, lam: a number or "auto"
            num = int if types[k].startswith("int") else float
            try:
                out[k] = num(v)
            except ValueError:
                out[k] = v
        else:
            out[k] = {"int": int, "float": float}.get(types[k], str)(v)
    return out


def row(field, method, s, **extra):
    """One table row from `cellnb.metrics.summarize` output."""
    return {"field": field, "method": method, "mIOU": round(s["mIOU"], 3),
            "mIOU_sd": round(s["mIOU_sd"], 3), "missed": s["missed"], "cells": s["n_truth"],
            "AP50": round(s["AP50"], 3), "F1@0.5": round(s["F1@0.5"], 3),
            "mAP": round(s["mAP"], 3), **extra}


def both_rules(cells, res, image, modalities, split: bool = False) -> dict:
    """Scores of both mask integration rules on one trained result (`SegmentResult`).

    The method picks one from the network's coverage of the mask
    (`cellnb.integrate.FLOOD_BELOW`); these columns show what the other
    would have given on the same model: ``cover``, ``flood_mIOU/AP50`` (cores
    flooded through the mask), ``inmask_mIOU/AP50`` (the paper's rule
    inside the mask). `split`: as `segment`'s (markers found in the image).
    """
    from cellnb import integrate, metrics, pipeline
    relief = integrate.border_landscape(image, modalities)
    dark = pipeline.join_darkness(image, modalities) if split else None
    out = {"cover": round(res.coverage, 3) if res.coverage is not None else None}
    for name, flood in (("flood", True), ("inmask", False)):
        lab = integrate.integrate(res.probs, res.patches, mask=res.mask, landscape=relief,
                                  flood=flood, **integrate.flood_options(modalities))
        if split:                       # as segment did (two-lobed labels cut, pieces joined)
            lab = pipeline.repair_found_markers(lab, relief, res.markers[:len(res.probs)],
                                                dark)[0]
        s = metrics.summarize(cells, lab)
        out[f"{name}_mIOU"], out[f"{name}_AP50"] = round(s["mIOU"], 3), round(s["AP50"], 3)
    return out
