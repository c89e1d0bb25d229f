"""openpi's normalization statistics: `<checkpoint>/assets/<asset_id>/norm_stats.json`, and the two
(de)normalizations openpi uses with them: z-score for pi0, quantile (q01/q99 -> [-1, 1]) for every other model
(pi0.5, FAST; openpi's `use_quantile_norm = model_type != PI0`). numpy only.

File format (openpi): {"norm_stats": {"state": {"mean": [...], "std": [...], "q01": [...], "q99": [...]},
"actions": {...}}}; q01/q99 may be absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from pi0viz.errors import CheckpointError

NORM_EPS = 1e-6  # openpi's z-score epsilon
NormStats = Mapping[str, Mapping[str, np.ndarray]]


def load_norm_stats(checkpoint_dir: str | os.PathLike, asset_id: str,
                    required: tuple[str, ...] = ("state", "actions")) -> dict[str, dict[str, np.ndarray]]:
    """Read `<checkpoint>/assets/<asset_id>/norm_stats.json`.

    Returns:
        {"state": {"mean", "std"[, "q01", "q99"]}, "actions": {...}}: float64[d] arrays.
    Raises:
        CheckpointError naming the file when it is missing, not JSON, lacks a `required` entry or mean/std, or
        holds non-finite numbers or fields of different lengths.
    """
    path = Path(checkpoint_dir) / "assets" / asset_id / "norm_stats.json"
    if not path.is_file():
        raise CheckpointError(f"no norm stats at {path} (asset_id is e.g. 'physical-intelligence/libero')")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"norm stats file {path} is not readable JSON ({err})") from None
    stats = data.get("norm_stats", data) if isinstance(data, dict) else None
    if not isinstance(stats, dict):
        raise CheckpointError(f"norm stats file {path}: expected {{'norm_stats': {{key: stats}}}}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, entry in stats.items():
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise CheckpointError(f"norm stats file {path}: {key!r} needs 'mean' and 'std', got {entry!r:.200}")
        try:
            out[key] = {k: np.asarray(v, dtype=np.float64) for k, v in entry.items() if v is not None}
        except (TypeError, ValueError):
            raise CheckpointError(f"norm stats file {path}: {key!r} must hold lists of numbers") from None
        for field, values in out[key].items():
            if values.ndim != 1 or not np.isfinite(values).all():
                raise CheckpointError(f"norm stats file {path}: {key}.{field} must be a list of finite numbers, got "
                                      f"{values.tolist()!r:.200}")
        lengths = {f: len(v) for f, v in out[key].items()}
        if len(set(lengths.values())) != 1:
            raise CheckpointError(f"norm stats file {path}: {key!r} fields have different lengths {lengths}")
    missing = [k for k in required if k not in out]
    if missing:
        raise CheckpointError(f"norm stats file {path}: missing {missing} (with 'mean' and 'std'); found {sorted(out)}")
    return out


def check_norm_stats(stats: NormStats, action_dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Validated copies of the "state" and "actions" entries (1..action_dim finite numbers each, mean and std
    of equal length; q01/q99 kept when present and of the same length).

    Raises:
        CheckpointError saying which entry is wrong.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in ("state", "actions"):
        if key not in stats:
            raise CheckpointError(f"norm stats need {key!r} (with 'mean' and 'std'), got keys {sorted(stats)}")
        entry = {}
        for field in ("mean", "std", "q01", "q99"):
            if field not in stats[key]:
                if field in ("mean", "std"):
                    raise CheckpointError(f"norm stats {key!r} need 'mean' and 'std', got {sorted(stats[key])}")
                continue
            v = np.asarray(stats[key][field], dtype=np.float64).reshape(-1)
            if v.shape[0] == 0 or v.shape[0] > action_dim or not np.isfinite(v).all():
                raise CheckpointError(
                    f"norm stats {key}.{field} must be 1..{action_dim} finite numbers, got {v.tolist()[:40]}")
            entry[field] = v
        lengths = {f: v.shape[0] for f, v in entry.items()}
        if len(set(lengths.values())) != 1:
            raise CheckpointError(f"norm stats {key}: fields have different lengths {lengths}")
        out[key] = entry
    return out


def zscore(x: np.ndarray, stats: Mapping[str, np.ndarray], width: int) -> np.ndarray:
    """float[d] -> float32[width]: (x - mean) / (std + 1e-6) with the first d stats, then zero padding."""
    d = x.shape[-1]
    out = np.zeros(x.shape[:-1] + (width,), dtype=np.float32)
    out[..., :d] = (x - stats["mean"][:d]) / (stats["std"][:d] + NORM_EPS)
    return out


def unzscore(x: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """float64[..., d]: x * (std + 1e-6) + mean over the last axis, stats padded with mean 0 / std 1 to d."""
    d = x.shape[-1]
    mean, std = np.zeros(d), np.ones(d)
    n = min(d, stats["mean"].shape[0])
    mean[:n], std[:n] = stats["mean"][:n], stats["std"][:n]
    return np.asarray(x, np.float64) * (std + NORM_EPS) + mean


def quantile_normalize(x: np.ndarray, stats: Mapping[str, np.ndarray], width: int) -> np.ndarray:
    """float[d] -> float64[width]: (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 with the first d stats, zero padding.

    float64 as openpi computes it (numpy stats), so the pi0.5 prompt's state discretization sees the same values.
    """
    d = x.shape[-1]
    q01, q99 = stats["q01"][:d], stats["q99"][:d]
    out = np.zeros(x.shape[:-1] + (width,), dtype=np.float64)
    out[..., :d] = (np.asarray(x, np.float64) - q01) / (q99 - q01 + NORM_EPS) * 2.0 - 1.0
    return out


def quantile_unnormalize(x: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """float64[..., d]: (x + 1) / 2 * (q99 - q01 + 1e-6) + q01 on the dims the stats cover; the rest unchanged."""
    x = np.array(x, dtype=np.float64)
    n = min(x.shape[-1], stats["q01"].shape[0])
    q01, q99 = stats["q01"][:n], stats["q99"][:n]
    x[..., :n] = (x[..., :n] + 1.0) / 2.0 * (q99 - q01 + NORM_EPS) + q01
    return x
