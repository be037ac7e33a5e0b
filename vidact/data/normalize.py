"""Normalization statistics for state and actions: read from a LeRobot dataset or computed, saved
as JSON for the run directory and the exported policy.

The stats dict has the shape ``vidact.tokenizers.action.Normalizer.set_stats`` takes:
``{"state": {"mean", "std", "min", "max", "q01", "q99", "count"}, "action": {...}}``, each a list of
floats per dimension. Dividing by a zero std / zero quantile range is avoided in the Normalizer
(a constant dimension gets scale 1); the stats themselves stay exact so they can be inspected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")
FIELDS = ("state", "action")


def compute_stats(values: np.ndarray) -> dict[str, list[float]]:
    """Exact per-dimension statistics of ``values`` [N, D]."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"statistics need a non-empty [N, D] array, got shape {list(values.shape)}")
    q01, q99 = np.quantile(values, [0.01, 0.99], axis=0)
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "min": values.min(0).tolist(),
            "max": values.max(0).tolist(), "q01": q01.tolist(), "q99": q99.tolist(), "count": [int(values.shape[0])]}


def lerobot_stats(meta, state_key: str, action_key: str) -> dict[str, dict[str, list[float]]] | None:
    """Stats LeRobot wrote into ``meta/stats.json`` (its q01/q99 come from histograms), or None
    when the dataset lacks them for either key."""
    stats = getattr(meta, "stats", None) or {}
    out = {}
    for name, key in (("state", state_key), ("action", action_key)):
        entry = stats.get(key)
        if not entry or any(k not in entry for k in STAT_KEYS):
            return None
        out[name] = {k: np.asarray(entry[k], dtype=np.float64).reshape(-1).tolist() for k in (*STAT_KEYS, "count")
                     if k in entry}
    return out


def dataset_stats(dataset, source: str = "exact") -> dict[str, dict[str, list[float]]]:
    """Stats for a :class:`vidact.data.robot.RobotDataset`.

    ``exact`` computes them from the columns the dataset already holds (cheap: a few floats per
    frame). ``lerobot`` reads ``meta/stats.json``; its quantiles come from 5000-bin histograms that
    merge per-episode estimates, which on a +-1 gripper put q01 = q99 = the mean.
    """
    if source == "lerobot":
        found = lerobot_stats(dataset.meta, dataset.state_key, dataset.action_key)
        if found is None:
            raise KeyError(f"{dataset.meta.root}/meta/stats.json lacks {list(STAT_KEYS)} for "
                           f"'{dataset.state_key}' or '{dataset.action_key}'; use data.stats='exact'")
        return found
    if source != "exact":
        raise ValueError(f"data.stats={source!r}: dataset stats come from 'exact' or 'lerobot'")
    return {name: compute_stats(values) for name, values in dataset.columns().items()}


def merge_stats(parts: list[Mapping[str, Mapping[str, list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """Combine stats of several datasets (count-weighted mean/std, global min/max; quantiles are
    approximated by the count-weighted mean of each part's, as openpi does across datasets)."""
    if not parts:
        raise ValueError("no statistics to merge")
    out: dict[str, dict[str, list[float]]] = {}
    for name in FIELDS:
        entries = [p[name] for p in parts]
        dims = {len(e["mean"]) for e in entries}
        if len(dims) != 1:
            raise ValueError(f"cannot merge '{name}' statistics of different sizes {sorted(dims)}")
        n = np.array([float(e.get("count", [1])[0]) for e in entries])[:, None]
        mean = np.array([e["mean"] for e in entries])
        std = np.array([e["std"] for e in entries])
        total_mean = (n * mean).sum(0) / n.sum()
        var = (n * (std ** 2 + (mean - total_mean) ** 2)).sum(0) / n.sum()
        out[name] = {"mean": total_mean.tolist(), "std": np.sqrt(var).tolist(),
                     "min": np.min([e["min"] for e in entries], 0).tolist(),
                     "max": np.max([e["max"] for e in entries], 0).tolist(),
                     "q01": ((n * np.array([e["q01"] for e in entries])).sum(0) / n.sum()).tolist(),
                     "q99": ((n * np.array([e["q99"] for e in entries])).sum(0) / n.sum()).tolist(),
                     "count": [int(n.sum())]}
    return out


def save_stats(stats: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2))
    tmp.replace(path)  # atomic: a run killed mid-write never leaves half a stats file
    return path


def load_stats(path: str | Path) -> dict[str, dict[str, list[float]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"normalization stats file {path} does not exist")
    stats = json.loads(path.read_text())
    for name in FIELDS:
        if name not in stats:
            raise KeyError(f"normalization stats file {path} lacks '{name}' (has {sorted(stats)})")
        missing = [k for k in STAT_KEYS if k not in stats[name]]
        if missing:
            raise KeyError(f"normalization stats file {path}: '{name}' lacks {missing}")
    return stats
