"""A knockout study on one observation, for any pi0viz JAX policy (tiny, reach-tiny, an openpi checkpoint; pi0
and pi0.5): remove key sets, measure how far the action chunk moves against the unmodified call, next to a
matched random baseline.

For every key set and every place (`Place`: a route, optionally one layer), one row removes the set's keys by
masking (`Knockout`, exact). A set of k patches of one camera also gets `draws` rows that remove k random patches
of the same camera in the same place (the matched baseline), and, with method "pixels", rows that paint the same
patches with the camera image's mean colour and rerun the unmodified model (pixel replacement: the inputs change,
every query sees the painted patches). Every row runs with each of `noise_draws` noise draws; all rows of all draws
are batched through `sample_knockouts`.

The measure is in the policy's robot units (after its output transforms): the mean |delta action| over the chunk
(A actions x the policy's action dims) against the unmodified call with the same noise; mean and standard error
over the noise draws (random: over draws x noise draws). `ratio` = a set's mean / its random baseline's mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pi0viz.causal.knockout import (ROUTES, Knockout, camera_keys, image_queries, mean_se, paint_patches,
                                    patch_keys, random_keys, sample_knockouts, take_observation)
from pi0viz.core.capture_options import CaptureOptions

STUDY_FORMAT = "pi0viz.knockout.conditions/1"
METHODS = ("keys", "pixels")


@dataclasses.dataclass(frozen=True)
class KeySet:
    """Keys to remove.

    Attributes:
        name: a label ("camera base_0_rgb", "top-16", "prompt 'bowl'", ...).
        keys: bool[P] over the prefix tokens.
        camera: the camera whose patches the set holds (None for prompt tokens): random baselines draw there and
            pixel replacement paints there.
    """

    name: str
    keys: np.ndarray
    camera: str | None = None

    def patches(self, config: Any) -> np.ndarray | None:
        """bool[patches] of `camera` (None for a prompt set)."""
        if self.camera is None:
            return None
        start = list(config.image_keys).index(self.camera) * config.num_image_tokens
        return np.asarray(self.keys[start:start + config.num_image_tokens], bool)


PLACE_ROUTES = (*ROUTES, "image")  # "image": the prefix pass, the image tokens' queries only


@dataclasses.dataclass(frozen=True)
class Place:
    """Where keys are removed: a route ("all", "prefix", "expert", or "image": only the image tokens' queries of the
    prefix pass) and one layer or every layer (None)."""

    route: str = "all"
    layer: int | None = None

    @property
    def label(self) -> str:
        return self.route if self.layer is None else f"{self.route}, layer {self.layer}"

    def knockout(self, name: str, keys: np.ndarray, config: Any) -> Knockout:
        if self.route == "image":
            return Knockout(name, keys, "prefix", self.layer, queries=image_queries(config))
        return Knockout(name, keys, self.route, self.layer)


def parse_places(text: str, depth: int, per_layer: bool = False) -> list[Place]:
    """"all,prefix,expert@2" -> places (ROUTE or ROUTE@LAYER); per_layer adds every layer of each route given.
    ValueError (one line) for anything else."""
    places: list[Place] = []
    for item in (t.strip() for t in text.split(",")):
        route, _, layer = item.partition("@")
        if route not in PLACE_ROUTES or (layer and not layer.isdigit()):
            raise ValueError(f"--where {text!r}: expected routes all, prefix, expert, image, each optionally @LAYER")
        if layer and int(layer) >= depth:
            raise ValueError(f"--where {item}: the model has {depth} layers (0..{depth - 1})")
        places.append(Place(route, int(layer) if layer else None))
    if per_layer:
        for route in dict.fromkeys(p.route for p in places):
            places += [Place(route, l) for l in range(depth)]
    return list(dict.fromkeys(places))


@dataclasses.dataclass
class _Row:
    set: str
    method: str
    place: Place
    kind: str  # "set", "random" or "unmodified"
    keys: np.ndarray
    paint: tuple[str, np.ndarray] | None = None  # (camera, patches) for pixel replacement


def knockout_study(policy: Any, observation: Any, key_sets: Sequence[KeySet], *, places: Sequence[Place] = (Place(),),
                   methods: Sequence[str] = ("keys",), draws: int = 5, noise_draws: int = 3, seed: int = 0,
                   batch: int = 16) -> dict[str, Any]:
    """Run the study (module docstring) on one batched observation (B = 1, e.g. `to_observation(inputs)`).

    Args:
        policy: a pi0viz JAX `Policy` (params, config, postprocess, num_steps).
        observation: the model input, batch 1 (any array type; the state row is used for postprocessing).
        key_sets: what to remove.
        places: where (key masking only; pixel replacement changes the inputs, so it has one place: every query).
        methods: "keys" (masking) and/or "pixels" (pixel replacement, camera sets only).
        draws: random patch sets per camera set and place (the matched baseline).
        noise_draws: noise draws every row runs with (the standard error of a set's shift is over these).
        seed: the noise and the random sets.
    Returns:
        The JSON-ready result (format "pi0viz.knockout.conditions/1"): "conditions", one entry per (set, method,
        place) with k, mean_abs_delta {mean, se}, random {mean, se}, ratio; plus the settings.
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method {m!r}: expected one of {list(METHODS)}")
    cfg = policy.config
    rng = np.random.default_rng(seed)
    none = np.zeros(cfg.prefix_len, bool)
    grid = (math.isqrt(cfg.num_image_tokens),) * 2
    rows: list[_Row] = [_Row("unmodified", "keys", Place(), "unmodified", none)]
    for s in key_sets:
        patches = s.patches(cfg)
        for method in methods:
            if method == "pixels" and patches is None:
                continue
            for place in (places if method == "keys" else [Place()]):
                if method == "keys":
                    rows.append(_Row(s.name, method, place, "set", np.asarray(s.keys, bool)))
                else:
                    rows.append(_Row(s.name, method, place, "set", none, (s.camera, patches)))
                if patches is None or patches.all():  # a whole camera: its random match is itself
                    continue
                k = int(patches.sum())
                for _ in range(draws):
                    drawn = random_keys(cfg, s.camera, k, rng)
                    if method == "keys":
                        rows.append(_Row(s.name, method, place, "random", drawn))
                    else:
                        start = list(cfg.image_keys).index(s.camera) * cfg.num_image_tokens
                        rows.append(_Row(s.name, method, place, "random", none,
                                         (s.camera, drawn[start:start + cfg.num_image_tokens])))
    n_rows = len(rows)
    noise = rng.standard_normal((noise_draws, cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    index = np.zeros(n_rows * noise_draws, int)
    obs = take_observation(observation, index)
    for j in range(noise_draws):
        for r, row in enumerate(rows):
            if row.paint is not None:
                cam, patches = row.paint
                obs.images[cam][j * n_rows + r] = paint_patches(obs.images[cam][j * n_rows + r], patches, grid)
    conds = [row.place.knockout(f"{row.set} ({row.kind})", row.keys, cfg) for row in rows]
    actions, _ = sample_knockouts(policy.params, cfg, obs, conds * noise_draws, np.repeat(noise, n_rows, axis=0),
                                  num_steps=policy.num_steps, batch=min(batch, n_rows * noise_draws))
    state = np.asarray(observation.state)[0]
    robot = np.stack([policy.postprocess(a, state) for a in actions]).reshape(noise_draws, n_rows, -1)
    delta = np.abs(robot - robot[:, :1]).mean(axis=-1)  # [noise draws, rows]: mean |delta| over A x dims

    conditions: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, Place], dict[str, Any]] = {}
    for r, row in enumerate(rows[1:], start=1):
        key = (row.set, row.method, row.place)
        entry = seen.get(key)
        if entry is None:
            s = next(s for s in key_sets if s.name == row.set)
            patches = s.patches(cfg)
            entry = seen[key] = {"set": row.set, "method": row.method, "route": row.place.route,
                                 "layer": row.place.layer, "camera": s.camera,
                                 "k": int(patches.sum()) if patches is not None else int(np.sum(s.keys)),
                                 "_set": [], "_random": []}
            conditions.append(entry)
        entry["_set" if row.kind == "set" else "_random"].append(delta[:, r])
    for entry in conditions:
        value = mean_se(entry.pop("_set")[0])
        randoms = entry.pop("_random")
        entry["mean_abs_delta"] = value
        if randoms:
            rand = mean_se(np.concatenate(randoms))
            entry["random"] = rand
            entry["ratio"] = value["mean"] / rand["mean"] if rand["mean"] > 0 else None
        else:
            entry["random"], entry["ratio"] = None, None
    return {
        "format": STUDY_FORMAT,
        "measure": "mean |delta action| over the chunk (robot units, the policy's action dims) against the "
                   "unmodified call, same noise",
        "methods": list(methods), "places": [p.label for p in places], "random_draws": draws,
        "noise_draws": noise_draws, "seed": seed, "rows": n_rows * noise_draws,
        "unmodified_actions": robot[0, 0].tolist(),
        "conditions": conditions,
    }


def map_key_set(scores: np.ndarray, config: Any, camera: str, k: int, *, top: bool, label: str) -> KeySet:
    """The top-k or bottom-k patches of a map float[patches] as a KeySet (ties break by patch index)."""
    from pi0viz.causal.knockout import ranked_keys

    return KeySet(f"{'top' if top else 'bottom'}-{k} of {label}", ranked_keys(config, camera, scores, k, top=top),
                  camera)


def unmodified_map(policy: Any, observation: Any, camera: str, step: int, layer: int, reduction: str,
                   seed: int = 0) -> np.ndarray:
    """float32[patches]: one camera's map of the unmodified call (the action tokens' attention on the prefix at
    `step` and `layer`, heads reduced by "mean", "max" or "head:N", action tokens averaged), noise from `seed`."""
    from pi0viz.causal.curves import map_scores

    cfg = policy.config
    noise = np.random.default_rng(seed).standard_normal((1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    _, attention = sample_knockouts(policy.params, cfg, observation, [Knockout("unmodified", np.zeros(
        cfg.prefix_len, bool))], noise, num_steps=policy.num_steps, batch=1,
        capture=CaptureOptions(action_rows_only=True, prefix_keys_only=True))
    return map_scores(attention, cfg, camera, step, layer, reduction)[0]


def camera_set(config: Any, camera: str) -> KeySet:
    return KeySet(f"camera {camera}", camera_keys(config, camera), camera)


def mask_set(config: Any, camera: str, patches: np.ndarray, name: str) -> KeySet:
    return KeySet(name, patch_keys(config, camera, patches), camera)
