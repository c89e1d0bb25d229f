"""A call's policy request as a side file next to its capture bundle: `NAME.observation.npz`, format
`pi0viz.observation/1` (numpy only, so the recorder of `pi0viz serve --record`, the LIBERO example and
`pi0viz knockout` share one writer; the reader with its checks is `pi0viz.causal.observation.load_observation`).

A capture bundle holds the images the model saw and the prompt, but not the robot state; this file keeps the whole
request the policy received (`observation/image`, `observation/wrist_image`, `observation/state`, `prompt`, ...):

    members: format = "pi0viz.observation/1", keys = str[M] (the request's keys), and value_0 .. value_{M-1}
             (each key's array; a string, e.g. the prompt, as a 0-d str)
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.core.writes import atomic_write
from pi0viz.errors import ConfigError

OBSERVATION_FORMAT = "pi0viz.observation/1"
OBSERVATION_SUFFIX = ".observation.npz"


def observation_path(bundle_path: str | os.PathLike) -> Path:
    """NAME.observation.npz next to the bundle NAME.npz."""
    path = Path(bundle_path)
    return path.with_name(path.name[:-4] + OBSERVATION_SUFFIX if path.name.endswith(".npz") else
                          path.name + OBSERVATION_SUFFIX)


def save_observation(obs: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a policy request {key: array or str} atomically as an .npz (format `pi0viz.observation/1`).
    ConfigError (one line) when a value is not an array, a number or a string (e.g. a nested map)."""
    keys = [str(k) for k in obs]
    arrays = {"format": np.asarray(OBSERVATION_FORMAT), "keys": np.asarray(keys, dtype=str)}
    for i, k in enumerate(keys):
        value = obs[k]
        arrays[f"value_{i}"] = np.asarray(value, dtype=str) if isinstance(value, str) else np.asarray(value)
        if arrays[f"value_{i}"].dtype == object:
            raise ConfigError(f"observation key {k!r} holds objects; expected arrays, numbers or a string")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())
    return Path(path)
