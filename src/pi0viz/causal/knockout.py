"""Knockouts: does the attention matter? Remove chosen prefix keys from the attention and measure how the action
chunk moves against the unmodified call.

A knockout masks keys exactly as padding is masked (`pi0viz.model.pi0.KeyKnockout`): the inputs are unchanged,
every token is still computed, only the chosen queries can no longer read the removed keys. Where:

    all       every query: the prefix pass (image and prompt tokens reading each other) and the action expert
    prefix    only the prefix's own queries (PaliGemma); the action expert still reads the keys
    expert    only the action expert's queries (the suffix pass, every denoising step: the maps pi0viz draws)

optionally in one layer only. Each condition is one row of a batch: a study of many conditions (and many
observations) is a few sampler calls.

Key sets are bool[P] over the prefix tokens (the camera slots' patches in `config.image_keys` order, then the
prompt slots): `camera_keys`, `prompt_keys`, `patch_keys` (a patch mask, e.g. an object's), `ranked_keys` (the
top-k or bottom-k patches of a map, e.g. `attention_scores` of a captured call), `random_keys`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.model.pi0 import KeyKnockout, Observation, sample_actions

# route -> (removed from the prefix queries, removed from the action expert's queries)
ROUTES = {"all": (True, True), "prefix": (True, False), "expert": (False, True)}


@dataclasses.dataclass(frozen=True)
class Knockout:
    """One condition: which prefix keys are removed, from which queries, in which layers.

    Attributes:
        name: a label for tables and JSON ("named object", "top-k", ...).
        keys: bool[P], True = removed.
        route: "all", "prefix" or "expert" (module docstring).
        layer: None = every layer; else the one layer (0-based) where the keys are removed.
        queries: None = every prefix query loses the keys; else bool[P], only these prefix queries do (e.g.
            `image_queries`: the image tokens cannot read the prompt). The action expert's queries follow `route`.
    """

    name: str
    keys: np.ndarray
    route: str = "all"
    layer: int | None = None
    queries: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"knockout route {self.route!r}: expected one of {sorted(ROUTES)}")


def _camera_slot(config: Any, camera: str) -> int:
    if camera not in config.image_keys:
        raise ValueError(f"camera {camera!r} is not one of the model's cameras {list(config.image_keys)}")
    return list(config.image_keys).index(camera)


def camera_keys(config: Any, camera: str) -> np.ndarray:
    """bool[P]: every patch of one camera (`config.image_keys` name, e.g. "base_0_rgb")."""
    c, n = _camera_slot(config, camera), config.num_image_tokens
    keys = np.zeros(config.prefix_len, bool)
    keys[c * n:(c + 1) * n] = True
    return keys


def prompt_keys(config: Any, slots: Sequence[int] | None = None) -> np.ndarray:
    """bool[P]: the prompt slots (all of them, or the given slot indices 0..T-1)."""
    start = len(config.image_keys) * config.num_image_tokens
    keys = np.zeros(config.prefix_len, bool)
    index = np.arange(config.max_token_len) if slots is None else np.asarray(slots, int)
    keys[start + index] = True
    return keys


def image_queries(config: Any) -> np.ndarray:
    """bool[P]: every camera's image tokens (as a `Knockout.queries` set: only they lose the keys)."""
    queries = np.zeros(config.prefix_len, bool)
    queries[:len(config.image_keys) * config.num_image_tokens] = True
    return queries


def patch_keys(config: Any, camera: str, patches: np.ndarray) -> np.ndarray:
    """bool[P]: the patches of one camera where `patches` (bool[h, w] or bool[h * w], the patch grid, row-major as
    the image tokens) is True, e.g. an object mask `coverage > 0`."""
    patches = np.asarray(patches, bool).reshape(-1)
    n = config.num_image_tokens
    if patches.shape[0] != n:
        raise ValueError(f"patch mask has {patches.shape[0]} patches, the camera has {n}")
    c = _camera_slot(config, camera)
    keys = np.zeros(config.prefix_len, bool)
    keys[c * n:(c + 1) * n] = patches
    return keys


def ranked_keys(config: Any, camera: str, scores: np.ndarray, k: int, *, top: bool = True,
                exclude: np.ndarray | None = None) -> np.ndarray:
    """bool[P]: the k patches of one camera with the highest (top) or lowest (bottom) `scores` float[h * w],
    skipping patches where `exclude` (bool[h * w]) is True. Ties break by patch index (stable sort)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    allowed = np.ones_like(scores, bool) if exclude is None else ~np.asarray(exclude, bool).reshape(-1)
    order = np.argsort(-scores if top else scores, kind="stable")
    chosen = order[allowed[order]][:k]
    patches = np.zeros(scores.shape[0], bool)
    patches[chosen] = True
    return patch_keys(config, camera, patches)


def random_keys(config: Any, camera: str, k: int, rng: np.random.Generator, *,
                exclude: np.ndarray | None = None) -> np.ndarray:
    """bool[P]: k patches of one camera drawn uniformly without replacement (outside `exclude` bool[h * w])."""
    n = config.num_image_tokens
    allowed = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, bool).reshape(-1)
    chosen = rng.choice(np.flatnonzero(allowed), size=min(k, int(allowed.sum())), replace=False)
    patches = np.zeros(n, bool)
    patches[chosen] = True
    return patch_keys(config, camera, patches)


def attention_scores(attention: np.ndarray, config: Any, camera: str, step: int, layer: int, *,
                     heads: str = "mean", action_rows: slice | None = None) -> np.ndarray:
    """float32[B, h * w]: one camera's patch scores of a captured call, the map to rank patches by.

    Args:
        attention: float[D, L, B, K, G, Q, S] as `sample_actions` captures it (keys start with the prefix).
        step, layer: the denoising step and layer of the map.
        heads: "mean" or "max" over the K x G query heads.
        action_rows: which query rows to average (default: every row captured; pass slice(1, None) for pi0's
            action tokens when the state row was captured too).
    """
    x = np.asarray(attention[step, layer], np.float32)  # [B, K, G, Q, S]
    x = x.max(axis=(1, 2)) if heads == "max" else x.mean(axis=(1, 2))  # [B, Q, S]
    if action_rows is not None:
        x = x[:, action_rows]
    c, n = _camera_slot(config, camera), config.num_image_tokens
    return x.mean(axis=1)[:, c * n:(c + 1) * n]


def stack_knockouts(conditions: Sequence[Knockout], num_layers: int) -> KeyKnockout:
    """The sampler's batched form of conditions (one per batch row)."""
    prefix = np.zeros((len(conditions), num_layers), bool)
    expert = np.zeros((len(conditions), num_layers), bool)
    for row, cond in enumerate(conditions):
        layers = np.ones(num_layers, bool) if cond.layer is None else np.arange(num_layers) == cond.layer
        in_prefix, in_expert = ROUTES[cond.route]
        prefix[row], expert[row] = layers & in_prefix, layers & in_expert
    keys = np.stack([np.asarray(c.keys, bool) for c in conditions]) if conditions else np.zeros((0, 0), bool)
    queries = None
    if any(c.queries is not None for c in conditions):  # else the sampler's every-query form (no [P, P] mask)
        queries = np.stack([np.ones(len(c.keys), bool) if c.queries is None else np.asarray(c.queries, bool)
                            for c in conditions])
    return KeyKnockout(keys=keys, prefix_layers=prefix, expert_layers=expert, prefix_queries=queries)


def take_observation(observation: Observation, index: np.ndarray) -> Observation:
    """Rows `index` (int[n], repeats allowed) of a batched observation, as numpy."""
    index = np.asarray(index, int)
    return Observation(
        images={c: np.asarray(x)[index] for c, x in observation.images.items()},
        image_masks={c: np.asarray(x)[index] for c, x in observation.image_masks.items()},
        state=np.asarray(observation.state)[index],
        tokenized_prompt=np.asarray(observation.tokenized_prompt)[index],
        tokenized_prompt_mask=np.asarray(observation.tokenized_prompt_mask)[index])


def sample_knockouts(params: Any, config: Any, observation: Observation, conditions: Sequence[Knockout],
                     noise: np.ndarray, *, num_steps: int = 10, batch: int = 64,
                     capture: CaptureOptions | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample one chunk per row: row i is observation row i under conditions[i], from noise[i].

    Rows run `batch` at a time; the last group is padded to `batch` rows, so every call has the same shape and
    the sampler compiles once.

    Args:
        observation: batch n (repeat one observation with `take_observation` for n conditions on it).
        conditions: n knockouts (a condition with no keys is the unmodified call, bit for bit).
        noise: float32[n, A, action_dim], the initial x of each row.
        capture: optional attention capture (the same options for every row).
    Returns:
        (float32[n, A, action_dim] actions, the captured attention [D, L, n, ...] or None).
    """
    n = len(conditions)
    if n != np.asarray(observation.state).shape[0] or n != np.asarray(noise).shape[0]:
        raise ValueError(f"{n} conditions for {np.asarray(observation.state).shape[0]} observation rows and "
                         f"{np.asarray(noise).shape[0]} noise rows: give one of each per condition")
    knock = stack_knockouts(conditions, config.llm.depth)
    actions, attention = [], []
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        padded = np.concatenate([rows, np.full(batch - len(rows), rows[-1])])
        out = sample_actions(
            params, config, jax.random.key(0), take_observation(observation, padded),
            num_steps=num_steps, noise=np.asarray(noise, np.float32)[padded], capture=capture,
            knockout=KeyKnockout(knock.keys[padded], knock.prefix_layers[padded], knock.expert_layers[padded],
                                 None if knock.prefix_queries is None else knock.prefix_queries[padded]))
        actions.append(np.asarray(out.actions)[:len(rows)])
        if out.attention is not None:
            attention.append(np.asarray(out.attention)[:, :, :len(rows)])
    return np.concatenate(actions), (np.concatenate(attention, axis=2) if attention else None)


def paint_patches(images: np.ndarray, patches: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """float32[h, w, 3] model-range image with the patches (bool[rows * cols], raster order) painted with the
    image's mean colour (per channel, over the whole image)."""
    out = np.array(images, np.float32, copy=True)
    rows, cols = grid
    ph, pw = out.shape[0] // rows, out.shape[1] // cols
    mean = out.reshape(-1, out.shape[-1]).mean(axis=0)
    for p in np.flatnonzero(np.asarray(patches, bool).reshape(-1)):
        r, c = divmod(int(p), cols)
        out[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = mean
    return out


def mean_abs_delta(base: np.ndarray, knocked: np.ndarray, dims: int | None = None) -> np.ndarray:
    """float64[...]: mean |knocked - base| over each chunk [..., A, action dims] (the first `dims` dims only)."""
    d = np.abs(np.asarray(knocked, np.float64) - np.asarray(base, np.float64))
    return (d if dims is None else d[..., :dims]).mean(axis=(-2, -1))


def mean_se(values: np.ndarray) -> dict[str, float]:
    """{"mean", "se"} over axis 0 (se: sample standard deviation / sqrt(n); 0 for one value)."""
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "se": se}
