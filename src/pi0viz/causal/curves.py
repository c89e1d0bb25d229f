"""Deletion and insertion curves (RISE-style): how faithful is an attention map to what the actions depend on?

Remove one camera's patches in the order of a map, a growing fraction at a time, and measure how far the action
chunk moves against the unmodified call (same observation, same noise); do the same in random orders (several
draws). A faithful map puts the patches that matter first, so its **deletion curve** rises faster than random's.
**Insertion** starts from every patch of the camera removed and adds them back in the map's order: a faithful map
brings the chunk back faster, so its curve falls faster than random's.

The faithfulness number of a map (`deletion_gap`) is the area between its deletion curve and random's (trapezoid
over the removed fraction 0..1, in the measure's units: positive = the map's order removes what matters sooner
than chance), per example, then mean and standard error over examples; `insertion_gap` is random's insertion area
minus the map's (positive = faithful too). Patches are removed by masking keys for every query (`Knockout` route
"all"), batched through `sample_knockouts`.

A map is a name and float[E, patches] (one score per patch per example); `map_grid` makes them from a captured
call: the action tokens' attention at chosen denoising steps and layers, reduced over heads by "mean", "max" or one
head "head:N" (N over the K x G query heads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pi0viz.causal.knockout import (Knockout, attention_scores, camera_keys, mean_abs_delta, mean_se, patch_keys,
                                    sample_knockouts, take_observation)
from pi0viz.core.capture_options import CaptureOptions

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
CURVES_FORMAT = "pi0viz.knockout/1"


def map_scores(attention: np.ndarray, config: Any, camera: str, step: int, layer: int, reduction: str) -> np.ndarray:
    """float32[B, patches]: one camera's patch scores of a captured call (action rows averaged), with the heads
    reduced by "mean", "max" or "head:N" (one query head, N in 0..K x G - 1)."""
    if reduction in ("mean", "max"):
        return attention_scores(attention, config, camera, step, layer, heads=reduction)
    head = parse_reduction(reduction)
    x = np.asarray(attention[step, layer], np.float32)  # [B, K, G, Q, S]
    x = x.reshape(x.shape[0], -1, *x.shape[3:])  # [B, N, Q, S]
    if not isinstance(head, int) or head >= x.shape[1]:
        raise ValueError(f"head reduction {reduction!r}: the model has {x.shape[1]} query heads (head:0..."
                         f"head:{x.shape[1] - 1})")
    start = list(config.image_keys).index(camera) * config.num_image_tokens
    return x[:, head].mean(axis=1)[:, start:start + config.num_image_tokens]


def parse_reduction(text: str) -> str | int:
    """"mean" | "max" -> itself; "head:N" -> N. ValueError for anything else."""
    if text in ("mean", "max"):
        return text
    if text.startswith("head:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(f"head reduction {text!r}: expected mean, max or head:N")


def map_grid(attention: np.ndarray, config: Any, camera: str, steps: Sequence[int], layers: Sequence[int],
                reductions: Sequence[str]) -> dict[str, np.ndarray]:
    """{"step S, layer L, REDUCTION": float32[B, patches]} for every step x layer x reduction of a captured call
    (attention float[D, L, B, K, G, Q, S], action rows only)."""
    return {f"step {s}, layer {l}, {r}": map_scores(attention, config, camera, s, l, r)
            for s in steps for l in layers for r in reductions}


def _counts(fractions: Sequence[float], n: int) -> list[int]:
    return [int(round(f * n)) for f in fractions]


def _order_keys(config: Any, camera: str, order: np.ndarray, count: int, insertion: bool) -> np.ndarray:
    """bool[P]: deletion removes the first `count` patches of `order`; insertion removes all but them."""
    patches = np.zeros(len(order), bool)
    patches[order[:count]] = True
    return patch_keys(config, camera, ~patches if insertion else patches)


def faithfulness_curves(params: Any, config: Any, observation: Any, noise: np.ndarray, maps: dict[str, np.ndarray],
                        *, camera: str, fractions: Sequence[float] = FRACTIONS, draws: int = 3, seed: int = 0,
                        num_steps: int = 10, batch: int = 64,
                        measure: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
                        measure_name: str = "mean abs delta action") -> dict[str, Any]:
    """Deletion and insertion curves of every map against random orders, on E examples.

    Args:
        observation, noise: E examples (batched observation, float32[E, A, action_dim] noise).
        maps: name -> float[E, patches] scores (higher = removed first); e.g. `map_grid(...)`.
        camera: the camera whose patches are removed.
        fractions: removed fractions in 0..1, increasing; 0 and 1 are added when missing.
        draws: random orders per example.
        measure: (unmodified actions [R, A, d], knocked actions [R, A, d], example index int[R]) -> float[R];
            default: mean |delta action| over the chunk (every action dim).
    Returns:
        The JSON-ready result (format "pi0viz.knockout/1"): per map and for random, the deletion and insertion
        curves (mean, se per fraction), their areas, and the maps' `deletion_gap` / `insertion_gap` (mean, se),
        plus "ranking": the map names by deletion gap, best first.
    """
    fractions = sorted({0.0, 1.0, *(float(f) for f in fractions)})
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in 0..1, got {fractions}")
    n_ex = int(np.asarray(observation.state).shape[0])
    n = config.num_image_tokens
    counts = _counts(fractions, n)
    inner = list(range(1, len(fractions) - 1))  # fractions strictly between 0 and 1 (those are shared rows)
    rng = np.random.default_rng(seed)
    orders: dict[str, np.ndarray] = {}  # name -> int[E, patches]
    for name, scores in maps.items():
        scores = np.asarray(scores, np.float64).reshape(n_ex, n)
        orders[name] = np.stack([np.argsort(-s, kind="stable") for s in scores])
    random_names = [f"random {d}" for d in range(draws)]
    for name in random_names:
        orders[name] = np.stack([rng.permutation(n) for _ in range(n_ex)])

    none, every = np.zeros(config.prefix_len, bool), camera_keys(config, camera)
    conds, rows, slots = [], [], []  # slots: (order name, "deletion"/"insertion", fraction index) per row
    for e in range(n_ex):
        conds += [Knockout("unmodified", none), Knockout("camera removed", every)]
        rows += [e, e]
        slots += [("", "", 0), ("", "", len(fractions) - 1)]
        for name, order in orders.items():
            for kind in ("deletion", "insertion"):
                for i in inner:
                    conds.append(Knockout(f"{name}, {kind} {fractions[i]:g}",
                                          _order_keys(config, camera, order[e], counts[i], kind == "insertion")))
                    rows.append(e)
                    slots.append((name, kind, i))
    rows = np.asarray(rows)
    actions, _ = sample_knockouts(params, config, take_observation(observation, rows), conds,
                                  np.asarray(noise, np.float32)[rows], num_steps=num_steps, batch=batch)
    per = len(conds) // n_ex
    base = actions[::per][np.repeat(np.arange(n_ex), per)]  # each row's unmodified call
    if measure is None:
        values = mean_abs_delta(base, actions)
    else:
        values = np.asarray(measure(base, actions, rows), np.float64)
    values = values.reshape(n_ex, per)

    # curves[name][kind]: float[E, fractions]; the 0 and 1 ends are the shared rows
    start, end = values[:, 0], values[:, 1]
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in orders:
        curves[name] = {}
        for kind in ("deletion", "insertion"):
            c = np.zeros((n_ex, len(fractions)))
            c[:, 0], c[:, -1] = (start, end) if kind == "deletion" else (end, start)
            curves[name][kind] = c
    for col, (name, kind, i) in enumerate(slots[:per]):
        if name:
            curves[name][kind][:, i] = values[:, col]
    x = np.asarray(fractions)
    area = {name: {kind: np.trapezoid(c, x, axis=1) if hasattr(np, "trapezoid") else np.trapz(c, x, axis=1)
                   for kind, c in kinds.items()} for name, kinds in curves.items()}
    random_curve = {kind: np.mean([curves[r][kind] for r in random_names], axis=0) for kind in ("deletion",
                                                                                             "insertion")}
    random_area = {kind: np.mean([area[r][kind] for r in random_names], axis=0) for kind in ("deletion",
                                                                                           "insertion")}

    def curve_json(c: np.ndarray) -> list[dict[str, float]]:
        return [mean_se(c[:, i]) for i in range(c.shape[1])]

    result: dict[str, Any] = {
        "format": CURVES_FORMAT,
        "examples": n_ex, "camera": camera, "patches": n, "fractions": fractions, "random_draws": draws,
        "seed": seed, "measure": measure_name,
        "faithfulness": "deletion_gap: area between the map's deletion curve and random order's (positive: the "
                        "map removes what matters sooner than chance); insertion_gap: random's insertion area "
                        "minus the map's",
        "random": {"deletion": curve_json(random_curve["deletion"]),
                   "insertion": curve_json(random_curve["insertion"]),
                   "deletion_area": mean_se(random_area["deletion"]),
                   "insertion_area": mean_se(random_area["insertion"])},
        "maps": {},
    }
    for name in maps:
        result["maps"][name] = {
            "deletion": curve_json(curves[name]["deletion"]),
            "insertion": curve_json(curves[name]["insertion"]),
            "deletion_area": mean_se(area[name]["deletion"]),
            "insertion_area": mean_se(area[name]["insertion"]),
            "deletion_gap": mean_se(area[name]["deletion"] - random_area["deletion"]),
            "insertion_gap": mean_se(random_area["insertion"] - area[name]["insertion"]),
            "deletion_gaps": (area[name]["deletion"] - random_area["deletion"]).tolist(),  # per example
        }
    result["ranking"] = rank_maps(result)
    return result


def paired_gap(result: dict[str, Any], better: str, worse: str) -> dict[str, float]:
    """{"mean", "se"} of the per-example difference of two maps' deletion gaps (paired: same examples, noise)."""
    a = np.asarray(result["maps"][better]["deletion_gaps"])
    return mean_se(a - np.asarray(result["maps"][worse]["deletion_gaps"]))


def rank_maps(result: dict[str, Any], by: str = "deletion_gap") -> list[str]:
    """The maps of a `faithfulness_curves` result, most faithful first (by mean deletion gap, or insertion gap)."""
    return sorted(result["maps"], key=lambda name: -result["maps"][name][by]["mean"])


def reach_faithfulness(policy: Any = None, scenes: Any = None, examples: np.ndarray | None = None, *,
                       steps: Sequence[int] = (7,), layers: Sequence[int] = (2,), reductions: Sequence[str] = ("mean",),
                       extra_maps: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                       fractions: Sequence[float] = FRACTIONS, draws: int = 3, seed: int = 0,
                       batch: int = 64, measure: str = "shift_cm") -> dict[str, Any]:
    """Deletion / insertion curves on reach-tiny's held-out scenes: the action tokens' maps (every step x layer x
    reduction of the unmodified call) against random order, measured as the chunk end's move (xy, cm).

    Args:
        policy, scenes, examples: as `pi0viz.causal.reach.reach_knockout_study` (default: the shipped model and
            held-out scenes, every example).
        extra_maps: maps -> more maps to test alongside (e.g. a deliberately bad order).
        seed: the noise (one draw per example, as the study) and the random orders.
        measure: "shift_cm" (the chunk end's move, xy, cm) or "mean_abs_delta" (mean |delta action| over the
            chunk in the model's action space).
    """
    if measure not in ("shift_cm", "mean_abs_delta"):
        raise ValueError(f"measure {measure!r}: expected shift_cm or mean_abs_delta")
    from pi0viz.causal.reach import CAMERA
    from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy
    from pi0viz.policy.reach_task import chunk_endpoint
    from pi0viz.training.reach_eval import batch_observation

    policy = load_reach_policy() if policy is None else policy
    scenes = heldout_scenes() if scenes is None else scenes
    examples = scenes.examples if examples is None else np.asarray(examples, np.int64).reshape(-1, 2)
    cfg = policy.config
    noise = np.random.default_rng(seed).standard_normal(
        (len(examples), cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    obs = batch_observation(policy, scenes, examples)
    unmodified = [Knockout("unmodified", np.zeros(cfg.prefix_len, bool))] * len(examples)
    _, attention = sample_knockouts(policy.params, cfg, obs, unmodified, noise, batch=batch,
                                    capture=CaptureOptions(action_rows_only=True, prefix_keys_only=True))
    maps = map_grid(attention, cfg, CAMERA, steps, layers, reductions)
    if extra_maps is not None:
        maps.update(extra_maps(maps))
    state = np.asarray(obs.state)

    def ends(chunks: np.ndarray, rows: np.ndarray) -> np.ndarray:  # float64[R, 2], where each chunk ends (xy)
        robot = np.stack([policy.postprocess(chunks[r], state[rows[r]]) for r in range(len(rows))])
        return chunk_endpoint(scenes.state[examples[rows, 0], :3], robot)[:, :2]

    def shift_cm(base: np.ndarray, knocked: np.ndarray, rows: np.ndarray) -> np.ndarray:
        first = np.unique(rows, return_index=True)[1]  # base rows repeat each example's unmodified chunk
        base_end = ends(base[first], rows[first])[np.searchsorted(rows[first], rows)]
        return 100 * np.linalg.norm(ends(knocked, rows) - base_end, axis=-1)

    names = {"shift_cm": "chunk end moves (xy, cm) against the unmodified call, same noise",
             "mean_abs_delta": "mean abs delta action (model space) against the unmodified call, same noise"}
    result = faithfulness_curves(policy.params, cfg, obs, noise, maps, camera=CAMERA, fractions=fractions,
                                 draws=draws, seed=seed, batch=batch,
                                 measure=shift_cm if measure == "shift_cm" else None, measure_name=names[measure])
    result["policy"] = "reach-tiny"
    result["scenes"] = int(len(np.unique(examples[:, 0])))
    return result
