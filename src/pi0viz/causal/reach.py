"""The knockout study on reach-tiny's held-out scenes: which agentview patches does the chunk depend on, and
through which route does the named object reach the action tokens?

For every example (scene, named object), with k = the number of patches the named object touches (coverage > 0):

    named object                  its patches, removed for every query
    top-k                         the k patches the action tokens attend to most (head mean, mean over action
                                  tokens, at one denoising step and layer of the unmodified call)
    top-k without the object      the same, skipping the object's patches
    random                        k random patches (`draws` draws, averaged per example)
    bottom-k                      the k least-attended patches
    named object, prefix queries  its patches removed only from the prefix's own queries (PaliGemma)
    named object, expert queries  removed only from the action expert's queries (the maps pi0viz draws)
    the prompt, image tokens'     every prompt slot removed from the image tokens' queries only (prefix pass):
      queries                     the image tokens cannot read the prompt; the prompt tokens and the expert can
    ... per layer                 the last two, one layer at a time (`per_layer`)

Measured against the unmodified call with the same noise: how far the chunk's end moves (xy, cm), the mean
|delta action| (LIBERO units, the 7 robot dims), and whether the end is still nearest the named object.
Means and standard errors are over examples.

    python -m pi0viz.causal.reach [--examples N] [--per-layer] [--json PATH] [--scenes FILE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from pi0viz.causal.knockout import (Knockout, attention_scores, image_queries, mean_abs_delta, mean_se,
                                    paint_patches, patch_keys, prompt_keys, ranked_keys, random_keys,
                                    sample_knockouts, take_observation)
from pi0viz.core.capture_options import CaptureOptions
from pi0viz.policy.reach_task import ReachScenes, chunk_endpoint

CAMERA = "base_0_rgb"  # the agentview: reach-tiny's one camera
COVERAGE_AGENTVIEW = 0  # index of the agentview in a scene's coverage


def _conditions(config: Any, named: np.ndarray, scores: np.ndarray, rng: np.random.Generator, *, draws: int,
                per_layer: bool, pixels: bool = False) -> tuple[list[Knockout], list[np.ndarray | None]]:
    """The study's conditions for one example (module docstring); the first is the unmodified call. Second: per
    condition, the agentview patches bool[patches] painted with the image mean (pixel replacement) or None."""
    k = int(named.sum())
    none = np.zeros(config.prefix_len, bool)
    keys = patch_keys(config, CAMERA, named)
    conds = [Knockout("unmodified", none),
             Knockout("named object", keys),
             Knockout("top-k", ranked_keys(config, CAMERA, scores, k)),
             Knockout("top-k without the object", ranked_keys(config, CAMERA, scores, k, exclude=named))]
    conds += [Knockout("random", random_keys(config, CAMERA, k, rng)) for _ in range(draws)]
    conds += [Knockout("bottom-k", ranked_keys(config, CAMERA, scores, k, top=False)),
              Knockout("named object, prefix queries", keys, route="prefix"),
              Knockout("named object, expert queries", keys, route="expert"),
              Knockout("the prompt, image tokens' queries", prompt_keys(config), route="prefix",
                       queries=image_queries(config))]
    if per_layer:
        for route, label in (("prefix", "prefix queries"), ("expert", "expert queries")):
            conds += [Knockout(f"named object, {label}, layer {l}", keys, route=route, layer=l)
                      for l in range(config.llm.depth)]
    paints: list[np.ndarray | None] = [None] * len(conds)
    if pixels:  # the same patch sets, painted instead of masked (the model unmodified)
        n = config.num_image_tokens
        for name in ("named object", "top-k", "random", "bottom-k"):
            sets = [c.keys[:n] for c in conds if c.name == name]
            conds += [Knockout(f"{name}, pixels", none) for _ in sets]
            paints += sets
    return conds, paints


def reach_knockout_study(policy: Any = None, scenes: ReachScenes | None = None, examples: np.ndarray | None = None,
                         *, step: int = 7, layer: int = 2, draws: int = 3, per_layer: bool = False, seed: int = 0,
                         batch: int = 64, pixels: bool = False) -> dict[str, Any]:
    """Run the study (module docstring) and return its JSON-ready result.

    Args:
        policy: a reach-tiny JAX `Policy` (default: the shipped model).
        scenes, examples: held-out scenes and their (scene, object) rows int[E, 2] (default: the shipped
            held-out scenes, every example).
        step, layer: the map the top-k / bottom-k patches are ranked by (default: the model card's best cell).
        draws: random patch sets per example.
        per_layer: also knock out the named object from the prefix / expert queries one layer at a time.
        pixels: also paint the named object's, the top-k, random and bottom-k patches with the image's mean colour
            and rerun the unmodified model (pixel replacement; conditions "..., pixels", route "all").
        seed: the noise (as `reach_eval.evaluate`: one draw per example) and the random patch sets.
        batch: rows per sampler call.
    """
    from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy
    from pi0viz.training.reach_eval import batch_observation

    policy = load_reach_policy() if policy is None else policy
    scenes = heldout_scenes() if scenes is None else scenes
    examples = scenes.examples if examples is None else np.asarray(examples, np.int64).reshape(-1, 2)
    cfg = policy.config
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(examples), cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    obs = batch_observation(policy, scenes, examples)
    e = len(examples)

    # 1. The unmodified call, with the action tokens' attention on the prefix: the map to rank patches by.
    unmodified = [Knockout("unmodified", np.zeros(cfg.prefix_len, bool))] * e
    _, attention = sample_knockouts(policy.params, cfg, obs, unmodified, noise, batch=batch,
                                    capture=CaptureOptions(action_rows_only=True, prefix_keys_only=True))
    scores = attention_scores(attention, cfg, CAMERA, step, layer)  # [E, patches]

    # 2. Every condition of every example as one row; rows run `batch` at a time.
    rows, conds, named_masks, paints = [], [], [], []
    for j, (i, k) in enumerate(examples):
        named = scenes.coverage[int(i)][int(k), COVERAGE_AGENTVIEW].reshape(-1) > 0
        named_masks.append(named)
        c, p = _conditions(cfg, named, scores[j], rng, draws=draws, per_layer=per_layer, pixels=pixels)
        conds += c
        paints += p
        rows += [j] * len(c)
    per_example = len(conds) // e
    rows = np.asarray(rows)
    knocked_obs = take_observation(obs, rows)
    side = int(round(np.sqrt(cfg.num_image_tokens)))
    for r, patches in enumerate(paints):
        if patches is not None:
            knocked_obs.images[CAMERA][r] = paint_patches(knocked_obs.images[CAMERA][r], patches, (side, side))
    actions, _ = sample_knockouts(policy.params, cfg, knocked_obs, conds, noise[rows], batch=batch)

    # 3. Per row: the chunk in LIBERO units, its end, the shift from the unmodified row, nearest object.
    robot = np.stack([policy.postprocess(actions[r], np.asarray(obs.state)[rows[r]]) for r in range(len(rows))])
    robot = robot.reshape(e, per_example, *robot.shape[1:])  # [E, conditions, A, 7]
    end = np.stack([chunk_endpoint(scenes.state[int(i), :3], robot[j])[:, :2] for j, (i, _) in enumerate(examples)])
    shift_cm = 100 * np.linalg.norm(end - end[:, :1], axis=-1)  # [E, conditions]
    delta = mean_abs_delta(robot[:, :1], robot)  # [E, conditions]
    nearest = np.zeros((e, per_example))
    error_cm = np.zeros((e, per_example))
    for j, (i, k) in enumerate(examples):
        present = np.flatnonzero(scenes.present[int(i)])
        pos = scenes.positions[int(i)][:, :2]
        dist = np.linalg.norm(pos[present][None] - end[j][:, None], axis=-1)  # [conditions, objects]
        nearest[j] = present[dist.argmin(axis=1)] == int(k)
        error_cm[j] = 100 * np.linalg.norm(pos[int(k)][None] - end[j], axis=-1)

    names = [c.name for c in conds[:per_example]]
    result: dict[str, Any] = {
        "format": "pi0viz.knockout.reach/1",
        "examples": e, "scenes": int(len(np.unique(examples[:, 0]))),
        "map": {"camera": CAMERA, "step": step, "layer": layer, "heads": "mean", "rows": "action tokens"},
        "k_patches": mean_se(np.sum(named_masks, axis=1)),
        "random_draws": draws, "seed": seed,
        "shift": "chunk end moves (xy, cm) against the unmodified call, same noise",
        "conditions": {},
    }
    for name in dict.fromkeys(names):  # first-seen order; the random draws are averaged per example
        cols = [c for c, n in enumerate(names) if n == name]
        first = conds[cols[0]]
        result["conditions"][name] = {
            "route": first.route, "layer": first.layer, "draws": len(cols),
            "queries": "all" if first.queries is None else "image tokens",
            "method": "pixels" if name.endswith(", pixels") else "keys",
            "shift_cm": mean_se(shift_cm[:, cols].mean(axis=1)),
            "mean_abs_delta": mean_se(delta[:, cols].mean(axis=1)),
            "nearest": mean_se(nearest[:, cols].mean(axis=1)),
            "error_cm": mean_se(error_cm[:, cols].mean(axis=1)),
        }
    return result


def knockout_table(result: dict[str, Any]) -> str:
    """The study's result as a Markdown table (mean +- standard error over examples)."""
    lines = [f"{result['examples']} examples ({result['scenes']} scenes), k = {result['k_patches']['mean']:.1f} "
             f"patches on average; map: {result['map']['camera']}, step {result['map']['step']}, layer "
             f"{result['map']['layer']}; random: {result['random_draws']} draws",
             "",
             "| removed | route | chunk end moves (cm) | mean abs delta action | named object nearest | error (cm) |",
             "|---|---|---|---|---|---|"]
    for name, c in result["conditions"].items():
        route = c["route"] if c["layer"] is None else f"{c['route']}, layer {c['layer']}"
        route = "pixel replacement" if c.get("method") == "pixels" else route
        lines.append(f"| {name} | {route} | {c['shift_cm']['mean']:.1f} +- {c['shift_cm']['se']:.1f} | "
                     f"{c['mean_abs_delta']['mean']:.3f} +- {c['mean_abs_delta']['se']:.3f} | "
                     f"{100 * c['nearest']['mean']:.0f} % | {c['error_cm']['mean']:.1f} |")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pi0viz.causal.reach", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=0, help="first N held-out examples (0: all)")
    parser.add_argument("--step", type=int, default=7)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--pixels", action="store_true", help="also pixel replacement of the same patch sets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--scenes", nargs="*", default=None,
                        help="scene files (reach_scenes output; default: the shipped held-out scenes)")
    args = parser.parse_args(argv)
    from pi0viz.policy.reach_model import heldout_scenes

    scenes = ReachScenes.load(args.scenes) if args.scenes else heldout_scenes()
    examples = scenes.examples[:args.examples] if args.examples else scenes.examples
    result = reach_knockout_study(scenes=scenes, examples=examples, step=args.step, layer=args.layer,
                                  draws=args.draws, per_layer=args.per_layer, seed=args.seed,
                                  pixels=args.pixels)
    print(knockout_table(result))
    if args.json:
        from pi0viz.core.writes import atomic_write

        atomic_write(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
