"""Where a knockout's observation comes from: a policy request saved as an .npz, a saved capture bundle, or the
observations that ship with pi0viz.

A capture bundle (`pi0viz.capture/1`) holds the images the model saw, the prompt and its tokens, but not the
robot state, and neither the LIBERO example nor `pi0viz serve --record` saves the state elsewhere. So a bundle
needs its state from one of: an observation file next to it (`NAME.observation.npz`, format
`pi0viz.observation/1`, written by `save_observation`), or the user (`--state`). The observation file is the whole
request the policy received (`observation/image`, `observation/wrist_image`, `observation/state`, `prompt`, ...),
so it is also an observation source on its own.

    observation file   members: format = "pi0viz.observation/1", keys = str[M] (the request's keys), and
                       value_0 .. value_{M-1} (each key's array; the prompt as a 0-d str)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pi0viz.core.observation_file import (  # noqa: F401 - re-exported: one writer, shared with serving/
    OBSERVATION_FORMAT, OBSERVATION_SUFFIX, observation_path, save_observation)
from pi0viz.errors import ConfigError

MAX_MEMBERS = 32  # a request is a handful of keys


def load_observation(path: str | os.PathLike) -> dict[str, Any]:
    """The request saved by `save_observation` (strings come back as str). ConfigError (one line) otherwise."""
    from pi0viz.core.npzfile import load_npz
    from pi0viz.errors import BundleError

    try:
        arrays = load_npz(path)
    except (BundleError, OSError) as err:
        raise ConfigError(f"observation {path}: {str(err).splitlines()[0]}") from None
    fmt = str(arrays.get("format", ""))
    if fmt != OBSERVATION_FORMAT:
        raise ConfigError(f"observation {path}: format {fmt!r}, expected {OBSERVATION_FORMAT} (save_observation)")
    keys = [str(k) for k in np.asarray(arrays.get("keys", []), dtype=str).reshape(-1)]
    if len(keys) > MAX_MEMBERS or any(f"value_{i}" not in arrays for i in range(len(keys))):
        raise ConfigError(f"observation {path}: its keys and value_N members do not match")
    out: dict[str, Any] = {}
    for i, k in enumerate(keys):
        v = arrays[f"value_{i}"]
        out[k] = str(v) if v.dtype.kind == "U" and v.ndim == 0 else v
    return out


def parse_state(text: str) -> np.ndarray:
    """"0.1,0.2,..." -> float64[d]; ConfigError (one line) for anything else."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--state {text!r}: expected the robot state as comma-separated numbers") from None
    if not values or not np.isfinite(values).all():
        raise ConfigError(f"--state {text!r}: expected the robot state as comma-separated finite numbers")
    return np.asarray(values, np.float64)


def bundle_observation(bundle_path: str | os.PathLike, state: np.ndarray | None = None) -> dict[str, Any]:
    """The LIBERO request of a saved call: its images (the model's view, 224 x 224), its prompt, and the state from
    `state`, else from NAME.observation.npz next to the bundle. ConfigError (one line) when neither gives one.

    The bundle's images are already what the model saw (rotated, resized with pad); the input chain leaves a
    224 x 224 image unchanged, so the model gets the same pixels as in the recorded call.
    """
    from pi0viz.core.bundle import load_bundle
    from pi0viz.errors import BundleError

    try:
        bundle = load_bundle(bundle_path)
    except (BundleError, OSError) as err:
        raise ConfigError(f"--bundle {bundle_path}: {str(err).splitlines()[0]}") from None
    side = observation_path(bundle_path)
    saved = load_observation(side) if side.is_file() else {}
    if state is None:
        if "observation/state" not in saved:
            raise ConfigError(f"--bundle {bundle_path}: a capture bundle does not hold the robot state; pass --state "
                              f"v1,v2,... or save the request as {side.name} (pi0viz.causal.observation)")
        state = np.asarray(saved["observation/state"], np.float64)
    if bundle.prompt is None:
        raise ConfigError(f"--bundle {bundle_path}: the bundle holds no prompt")
    names = bundle.camera_names
    image = bundle.images[0]  # [C, h, w, 3]

    def camera(slot: str) -> np.ndarray:
        return image[names.index(slot)] if slot in names else np.zeros_like(image[0])

    return {"observation/image": camera("base_0_rgb"), "observation/wrist_image": camera("left_wrist_0_rgb"),
            "observation/state": np.asarray(state, np.float64), "prompt": str(bundle.prompt[0])}


def shipped_observation(kind: str) -> tuple[dict[str, Any], str, np.ndarray | None]:
    """(request, description, the named object's patches bool[16, 16] or None) of an observation that ships with
    pi0viz: reach-tiny's first held-out example (a scene and its named object), else the libero_spatial frame."""
    if kind == "reach-tiny":
        from pi0viz.policy.reach_model import heldout_scenes

        scenes = heldout_scenes()
        i, k = (int(v) for v in scenes.examples[0])
        named = scenes.coverage[i][k, 0] > 0  # the agentview's patches the named object touches
        return (scenes.observation(i, k), f"reach-tiny held-out scene {i}, named object {scenes.labels[i][k]}",
                np.asarray(named, bool))
    from pi0viz.policy.libero_frames import load_libero_frames

    frame = load_libero_frames()[0]
    return frame.observation(), f"shipped LIBERO frame {frame.name}", None


def prompt_slots(pieces: Sequence[str], mask: np.ndarray, text: str) -> list[int]:
    """Prompt slots whose piece contains `text` (case-insensitive, SentencePiece's word mark ignored)."""
    want = text.lower().strip()
    return [i for i, (p, m) in enumerate(zip(pieces, np.asarray(mask, bool))) if m and want and
            want in str(p).replace("\u2581", " ").lower()]
