"""Train reach-tiny: pi0viz's JAX pi0 learns to reach the object the prompt names (openpi's flow-matching loss,
optax AdamW), evaluated on held-out scenes every `eval_every` steps and written in openpi's checkpoint layout.

    .venv/bin/python -m pi0viz.training.train_reach --scenes cache/reach_scenes --out cache/reach_tiny [--init DIR]

The shipped model's three stages and their exact arguments: scripts/train_reach_tiny.sh (docs/reach_tiny.md).
Training scenes are seed 0 (by default `task_*_seed_0_distinct.npz`: the five DISTINCT_KINDS in view), the
curriculum's easy pool its solo scenes, and held-out scenes seed 1: other random layouts of the same ten
libero_object tasks. A step draws each example from the easy pool with a probability that falls linearly from 1
to `easy_floor` over the first `solo_until` of the steps, else from the full scenes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from pi0viz.core.writes import atomic_write, replace_folder
from pi0viz.model.checkpoint import save_params
from pi0viz.model.loss import flow_matching_loss
from pi0viz.model.pi0 import Observation, num_params
from pi0viz.policy.jax_policy import Policy
from pi0viz.policy.norm_stats import zscore
from pi0viz.policy.reach_model import REACH_ASSET_ID, initial_params, reach_config, reach_transforms
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.training.reach_eval import batch_observation, concat_observations, evaluate
from pi0viz.policy.reach_task import ACTION_UNIT_M, CHUNKS, SHIPPED_ACTION_UNIT_M, ReachScenes


def norm_stats_of(scenes: ReachScenes, *, chunk: str = "min_jerk",
                  unit_m: float = SHIPPED_ACTION_UNIT_M) -> dict[str, dict[str, list[float]]]:
    """openpi's norm_stats.json content (mean/std, with q01/q99) of the training states and target chunks."""
    states = scenes.state[np.unique(scenes.examples[:, 0])]
    chunks = np.concatenate([scenes.chunk(int(i), int(k), kind=chunk, unit_m=unit_m)
                             for i, k in scenes.examples])  # [E * A, 7]
    out = {}
    for key, x in (("state", states), ("actions", chunks)):
        out[key] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
                    "q01": np.quantile(x, 0.01, axis=0).tolist(), "q99": np.quantile(x, 0.99, axis=0).tolist()}
    return out


def write_checkpoint(out: Path, params: Any, stats: dict, card: dict) -> None:
    """<out>/params (orbax, openpi layout), <out>/assets/pi0viz/reach/norm_stats.json, <out>/model.json."""
    host = jax.device_get(params)
    replace_folder(out / "params", lambda tmp: save_params(host, tmp), create=False)  # orbax makes the folder
    atomic_write(out / "assets" / REACH_ASSET_ID / "norm_stats.json", json.dumps({"norm_stats": stats}, indent=1))
    atomic_write(out / "model.json", json.dumps(card, indent=1))


# Scene files (globs under the scenes folder) of the three pools; the defaults are the shipped recipe's.
TRAIN_GLOB = "task_*_seed_0_distinct.npz"
EASY_GLOB = "task_*_seed_0_solo.npz"  # the curriculum's easy scenes: one object in view
HELD_GLOB = "task_*_seed_1_distinct.npz"


def scene_files(scenes_dir: Path, globs: str) -> list[Path]:
    """The sorted files of comma-separated globs under scenes_dir."""
    return [f for g in globs.split(",") if g for f in sorted(scenes_dir.glob(g))]


def train(scenes_dir: Path, out: Path, *, steps: int, batch: int, lr: float, seed: int, solo_until: float,
          eval_every: int, eval_examples: int, init: Path | None = None, easy_floor: float = 0.1,
          stop_at: int | None = None, train_glob: str = TRAIN_GLOB, easy_glob: str = EASY_GLOB,
          held_glob: str = HELD_GLOB, chunk: str = "min_jerk", unit_m: float | None = None) -> dict:
    """Train from `initial_params(config, seed)` (or the params of checkpoint `init`, to continue a run) and
    write the checkpoint to `out` at every evaluation. Returns params, norm stats, the eval log and the losses.

    `chunk`: the target chunks (`reach_task.CHUNKS`: "min_jerk", the shipped model's open-loop task, or "approach",
    the closed-loop one); `unit_m`: their action unit (default: the shipped unit for min_jerk, the measured
    ACTION_UNIT_M for approach). Both are written to the checkpoint's model.json ("task")."""
    if chunk not in CHUNKS:
        raise SystemExit(f"--chunk {chunk!r}: expected one of {CHUNKS}")
    unit_m = unit_m if unit_m is not None else (SHIPPED_ACTION_UNIT_M if chunk == "min_jerk" else ACTION_UNIT_M)
    task = {"chunk": chunk, "action_unit_m": unit_m}
    train_files = scene_files(scenes_dir, train_glob)
    solo_files = scene_files(scenes_dir, easy_glob)
    held_files = scene_files(scenes_dir, held_glob)
    if not train_files or not held_files:
        raise SystemExit(f"no scene files {train_glob!r} / {held_glob!r} under {scenes_dir}: generate them first "
                         "(python -m pi0viz.training.reach_scenes, see scripts/train_reach_tiny.sh)")
    full = ReachScenes.load(train_files)
    solo = ReachScenes.load(solo_files) if solo_files else None
    held = ReachScenes.load(held_files)
    print(f"scenes: {len(full)} training ({len(full.examples)} examples), {len(solo) if solo else 0} easy, "
          f"{len(held)} held out ({len(held.examples)} examples)", flush=True)

    tokenizer = PromptTokenizer.bundled()
    config = reach_config(tokenizer.vocab_size)
    stats = norm_stats_of(full, chunk=chunk, unit_m=unit_m)
    params = initial_params(config, seed)
    if init is not None:
        from pi0viz.model.checkpoint import load_params

        params = load_params(init / "params", dtype="float32", config=config)
        print(f"continuing from {init}", flush=True)
    policy = Policy(params, config, reach_transforms(
        config, tokenizer, {k: {f: np.asarray(v) for f, v in d.items()} for k, d in stats.items()}))
    print(f"model: {num_params(params) / 1e6:.2f} M parameters", flush=True)

    import optax

    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps // 10), steps, lr / 10)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=1e-4))
    opt_state = tx.init(params)

    @jax.jit
    def step_fn(params, opt_state, rng, obs, actions):
        obs = Observation(**obs)  # a dict through jit (the dataclass is not a pytree)

        def loss_fn(p):
            return flow_matching_loss(p, config, rng, obs, actions).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def make_batch(source: ReachScenes, picks: np.ndarray):
        ex = source.examples[picks]
        obs = batch_observation(policy, source, ex)
        acts = np.stack([zscore(source.chunk(int(i), int(k), kind=chunk, unit_m=unit_m), policy.norm_stats["actions"],
                                config.action_dim)
                         for i, k in ex]).astype(np.float32)
        return obs, acts

    rng = np.random.default_rng(seed)
    held_pick = held.examples[np.random.default_rng(1).permutation(len(held.examples))[:eval_examples]]
    key = jax.random.key(seed + 1)
    log, t0, losses = [], time.monotonic(), []
    out.mkdir(parents=True, exist_ok=True)
    last = min(steps, stop_at or steps)  # stop_at: end early, keeping the schedule of `steps`
    for step in range(1, last + 1):
        if solo is None:
            p_solo = 0.0
        elif step < solo_until * steps:  # from all easy to the floor, linearly
            p_solo = max(easy_floor, 1.0 - step / (solo_until * steps))
        else:
            p_solo = easy_floor
        n_solo = int(rng.binomial(batch, p_solo)) if solo is not None else 0
        parts = []
        if n_solo:
            parts.append(make_batch(solo, rng.integers(len(solo.examples), size=n_solo)))
        if batch - n_solo:
            parts.append(make_batch(full, rng.integers(len(full.examples), size=batch - n_solo)))
        obs = concat_observations([p[0] for p in parts])
        acts = np.concatenate([p[1] for p in parts])
        key, sub = jax.random.split(key)
        params, opt_state, loss = step_fn(params, opt_state, sub, dataclasses.asdict(obs), acts)
        losses.append(float(loss))
        if step % 50 == 0:
            print(f"step {step}: loss {np.mean(losses[-50:]):.4f} easy {p_solo:.2f} "
                  f"({(time.monotonic() - t0) / step:.2f} s/step)", flush=True)
        if step % eval_every == 0 or step == last:
            policy.params = params
            s = evaluate(policy, held, held_pick, capture=True, unit_m=unit_m, chunk=chunk).summary()
            row = {"step": step, "loss": float(np.mean(losses[-50:])), "minutes": (time.monotonic() - t0) / 60,
                   "target_chunk_cm": s["target_chunk_cm"],
                   "error_cm": s["error_cm"], "nearest": s["nearest"], "scene_mean_cm": s["scene_mean_baseline_cm"],
                   "best": s["best"], "last_layer": s["last_layer_mean_over_steps"]}
            log.append(row)
            print("eval", json.dumps(row), flush=True)
            atomic_write(out / "train_log.json", json.dumps(log, indent=1))
            write_checkpoint(out, params, stats, {"format": "pi0viz.reach_tiny/1", "step": step, "task": task})
    return {"params": params, "stats": stats, "log": log, "losses": losses, "config": config}


def train_command() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=Path, default=Path("cache/reach_scenes"))
    parser.add_argument("--out", type=Path, default=Path("cache/reach_tiny"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solo-until", type=float, default=0.3, help="fraction of steps with the solo curriculum")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's params (continue)")
    parser.add_argument("--easy-floor", type=float, default=0.1, help="share of easy examples after the curriculum")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step (the schedule stays --steps)")
    parser.add_argument("--train-glob", default=TRAIN_GLOB, help="training scene files (comma-separated globs)")
    parser.add_argument("--easy-glob", default=EASY_GLOB, help="the curriculum's easy scene files ('' for none)")
    parser.add_argument("--held-glob", default=HELD_GLOB, help="held-out scene files")
    parser.add_argument("--chunk", default="min_jerk", choices=CHUNKS,
                        help="target chunks: min_jerk (open loop from the pose, the shipped task) or approach "
                             "(the next steps toward the target: the closed-loop task)")
    parser.add_argument("--unit", type=float, default=None,
                        help="metres per action unit of the chunks (default: 0.05 for min_jerk, the measured "
                             "ACTION_UNIT_M for approach)")
    args = parser.parse_args()
    train(args.scenes, args.out, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
          solo_until=args.solo_until, eval_every=args.eval_every, eval_examples=args.eval_examples, init=args.init,
          easy_floor=args.easy_floor, stop_at=args.stop_at, train_glob=args.train_glob, easy_glob=args.easy_glob,
          held_glob=args.held_glob, chunk=args.chunk, unit_m=args.unit)


if __name__ == "__main__":
    train_command()
