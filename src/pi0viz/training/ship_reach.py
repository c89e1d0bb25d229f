"""Evaluate a trained reach-tiny checkpoint on every held-out scene and, if it meets its claims, ship it.

    .venv/bin/python -m pi0viz.training.ship_reach --checkpoint cache/reach_tiny --scenes cache/reach_scenes

Writes src/pi0viz/assets/reach_tiny/: params/ and assets/ (openpi layout), heldout_scenes.npz (two held-out
scenes per task, the reach_scenes format: what the demo and the shipped-model test run on) and model.json
(config, training log, and the held-out figures of the trained and the untrained model side by side).
A model that fails `ship_gate` (it must reach the named object clearly better than a prompt-blind answer and look
at it) is not shipped; the command prints which claim failed and exits 1.

A checkpoint of the closed-loop task (model.json "task": {"chunk": "approach"}) also needs its closed-loop
evidence: `--closed-loop MODEL_RUN UNTRAINED_RUN BLIND_RUN`, three `pi0viz sweep --suite reach` runs on the same
held-out episodes (the model, `--reach-baseline untrained`, `--reach-baseline prompt-blind`); `closed_loop_gate`
reads their results.json and the figures go into model.json ("closed_loop").
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from pi0viz.core.jsonfile import read_json
from pi0viz.core.npzfile import load_npz
from pi0viz.core.writes import atomic_write, replace_folder
from pi0viz.policy.jax_policy import Policy
from pi0viz.policy.norm_stats import load_norm_stats
from pi0viz.policy.reach_model import (REACH_ASSET_ID, REACH_MODEL_DIR, initial_params, load_reach_policy,
                                       reach_config, reach_task_of, reach_transforms)
from pi0viz.training.reach_eval import evaluate
from pi0viz.training.train_reach import HELD_GLOB, TRAIN_GLOB, scene_files
from pi0viz.policy.reach_task import ReachScenes, chunk_endpoint

SHIPPED_SCENES = "heldout_scenes.npz"
SHIPPED_PER_TASK = 2  # held-out layouts per task that ship: 20 scenes, 63 examples, 3 MB
# The claims a model must meet on the held-out scenes before it ships (docs/reach_tiny.md):
MAX_ERROR_VS_BLIND = 0.8  # reach error at most this share of the prompt-blind scene-mean baseline
MIN_LIFT_RATIO = 3.0  # lift on the named object at the best (step, layer) vs the untrained model there
MIN_LIFT_VS_OTHERS = 1.5  # ... and vs the lift on the scene's other objects
# ... and, for the closed-loop task, in the simulator on held-out layouts (issue 24's gate):
MIN_CLOSED_LOOP_SUCCESS = 0.9  # share of episodes that reach the named object within the step budget
MIN_MARGIN_OVER_BASELINES = 0.3  # "far above": at least 30 points above the untrained and prompt-blind rates
MIN_NEAR_AT_END = 0.5  # the arm still near the target at the last step in most episodes
MAX_PUSHED = 0.5  # the target pushed > 2 cm (sweep.results.PUSHED_CM) in fewer than half of the episodes
MAX_RESULTS_BYTES = 64 << 20


def closed_loop_figures(run_dir: Path) -> dict:
    """{"run", "episodes", "success_rate", "near_at_end", "pushed"} (shares of episodes) of a reach sweep's
    results.json; ValueError naming the folder when it is not a finished reach run."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no results.json; expected a finished `pi0viz sweep --suite reach` run")
    results = read_json(path, max_bytes=MAX_RESULTS_BYTES)
    rows = results.get("objects") if isinstance(results, dict) else None
    if not rows or not all(isinstance(r, dict) and {"episodes", "near_at_end", "pushed"} <= set(r) for r in rows):
        raise ValueError(f"{path}: no per-object rows with near_at_end and pushed; expected a reach sweep's results")
    n = sum(int(r["episodes"]) for r in rows)
    return {"run": str(run_dir), "episodes": n, "success_rate": float(results["total"]["success_rate"]),
            "near_at_end": sum(int(r["near_at_end"]) for r in rows) / n, "pushed": sum(int(r["pushed"]) for r in rows) / n}


def closed_loop_gate(model: dict, untrained: dict, blind: dict) -> list[str]:
    """The closed-loop claims the model's figures (`closed_loop_figures`) fail against the two baselines'
    figures on the same episodes; empty = it may ship."""
    failed = []
    if not (model["episodes"] == untrained["episodes"] == blind["episodes"]):
        failed.append(f"the three runs have {model['episodes']}, {untrained['episodes']} and {blind['episodes']} "
                      "episodes; expected the same held-out episodes in each")
    if not model["success_rate"] >= MIN_CLOSED_LOOP_SUCCESS:
        failed.append(f"closed-loop success {100 * model['success_rate']:.0f} % is below "
                      f"{100 * MIN_CLOSED_LOOP_SUCCESS:.0f} %")
    for name, base in (("untrained", untrained), ("prompt-blind", blind)):
        if not model["success_rate"] >= base["success_rate"] + MIN_MARGIN_OVER_BASELINES:
            failed.append(f"closed-loop success {100 * model['success_rate']:.0f} % is not "
                          f"{100 * MIN_MARGIN_OVER_BASELINES:.0f} points above the {name} baseline's "
                          f"{100 * base['success_rate']:.0f} %")
    if not model["near_at_end"] > MIN_NEAR_AT_END:
        failed.append(f"the arm ends near the target in {100 * model['near_at_end']:.0f} % of the episodes; "
                      f"needs most (> {100 * MIN_NEAR_AT_END:.0f} %)")
    if not model["pushed"] < MAX_PUSHED:
        failed.append(f"the target was pushed in {100 * model['pushed']:.0f} % of the episodes; "
                      f"needs fewer than {100 * MAX_PUSHED:.0f} %")
    return failed


def ship_gate(heldout: dict) -> list[str]:
    """The claims a held-out summary (model.json's "heldout") fails; empty = it may ship."""
    failed = []
    if "target_chunk_cm" in heldout:  # the closed-loop task: its chunks are the next steps, not the whole reach
        if not heldout["target_chunk_cm"] <= MAX_ERROR_VS_BLIND * heldout["blind_chunk_cm"]:
            failed.append(f"chunk error {heldout['target_chunk_cm']:.1f} cm is not below {MAX_ERROR_VS_BLIND} x the "
                          f"prompt-blind chunk's {heldout['blind_chunk_cm']:.1f} cm")
    elif not heldout["error_cm"] <= MAX_ERROR_VS_BLIND * heldout["scene_mean_baseline_cm"]:
        failed.append(f"reach error {heldout['error_cm']:.1f} cm is not below {MAX_ERROR_VS_BLIND} x the prompt-blind "
                      f"baseline {heldout['scene_mean_baseline_cm']:.1f} cm")
    best = heldout["best_cell"]
    if not best["ratio"] >= MIN_LIFT_RATIO:
        failed.append(f"lift on the named object is {best['ratio']:.1f}x the untrained model's, needs {MIN_LIFT_RATIO}x")
    if not best["lift"] >= MIN_LIFT_VS_OTHERS * best["lift_other"]:
        failed.append(f"lift on the named object {best['lift']:.2f} is not {MIN_LIFT_VS_OTHERS}x the other objects' "
                      f"{best['lift_other']:.2f}")
    return failed


def ship_scenes(held_files: list[Path], out: Path, per_task: int = SHIPPED_PER_TASK) -> Path:
    """`per_task` scenes of every held-out file, joined into one compressed scene file: the first ones, or for
    closed-loop frames ("call" in the file) frames spread over the file (different reaches, early and late calls)."""
    parts = {}
    for f in held_files:
        z = load_npz(f)  # guarded reader: headers checked first, no pickle
        count = len(z["image"])
        pick = (np.linspace(0, count - 1, per_task).round().astype(int) if "call" in z
                else np.arange(min(per_task, count)))
        for key in ("image", "wrist_image", "state", "positions", "coverage"):
            parts.setdefault(key, []).append(z[key][pick])
        n = len(z["labels"])
        parts.setdefault("present", []).append(z["present"][pick] if "present" in z
                                               else np.ones((len(pick), n), bool))
        parts.setdefault("labels", []).append(np.repeat(z["labels"][None], len(pick), axis=0))
        parts.setdefault("task_id", []).append(np.full(len(pick), int(z["task_id"])))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    path = out / SHIPPED_SCENES
    atomic_write(path, lambda f: np.savez_compressed(f, format=np.array("pi0viz.reach_scenes/1"), **arrays))
    return path


def ship_command() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("cache/reach_tiny"))
    parser.add_argument("--scenes", type=Path, default=Path("cache/reach_scenes"))
    parser.add_argument("--out", type=Path, default=REACH_MODEL_DIR)
    parser.add_argument("--train-glob", default=TRAIN_GLOB, help="training scene files (comma-separated globs)")
    parser.add_argument("--held-glob", default=HELD_GLOB, help="held-out scene files")
    parser.add_argument("--figures-only", action="store_true", help="evaluate and print, ship nothing")
    parser.add_argument("--keep-scenes", action="store_true",
                        help="keep the package's heldout_scenes.npz (the demo's and the tests' scenes) as it is")
    parser.add_argument("--closed-loop", nargs=3, type=Path, metavar=("MODEL_RUN", "UNTRAINED_RUN", "BLIND_RUN"),
                        help="reach sweeps of the model and both baselines on the same held-out episodes "
                             "(required to ship a closed-loop checkpoint)")
    args = parser.parse_args()
    closed = None
    if args.closed_loop:
        try:
            closed = dict(zip(("model", "untrained", "prompt_blind"), map(closed_loop_figures, args.closed_loop)))
        except ValueError as e:
            raise SystemExit(f"ship_reach: {e}") from None
    elif reach_task_of(args.checkpoint)["chunk"] == "approach" and not args.figures_only:
        raise SystemExit("ship_reach: a closed-loop checkpoint ships only with its closed-loop evidence: "
                         "--closed-loop MODEL_RUN UNTRAINED_RUN BLIND_RUN (docs/reach_tiny.md)")

    held_files = scene_files(args.scenes, args.held_glob)
    held = ReachScenes.load(held_files)
    train = ReachScenes.load(scene_files(args.scenes, args.train_glob))
    trained = load_reach_policy(args.checkpoint)
    stats = load_norm_stats(args.checkpoint, REACH_ASSET_ID)
    untrained = Policy(initial_params(trained.config, 0), trained.config,
                       reach_transforms(trained.config, trained.tokenizer, stats))
    task = reach_task_of(args.checkpoint)  # the chunks and unit it was trained on: its answers are read in them
    figures = {}
    for name, policy in (("trained", trained), ("untrained", untrained)):
        start = time.monotonic()
        figures[name] = evaluate(policy, held, held.examples, unit_m=task["action_unit_m"],  # the closed-loop
                                 chunk=task["chunk"] if task["chunk"] == "approach" else None).summary()  # chunk
        print(f"{name}: {time.monotonic() - start:.0f} s", json.dumps(figures[name]["best"]), flush=True)
    # the prompt-blind baseline that knows nothing of the scene: the training set's mean endpoint
    ends = np.stack([chunk_endpoint(train.state[i, :3], train.chunk(int(i), int(k), kind=task["chunk"],
                                                                   unit_m=task["action_unit_m"]),
                                    task["action_unit_m"])[:2] for i, k in train.examples])
    mean_end = ends.mean(axis=0)
    dataset_mean_cm = float(np.mean([100 * np.linalg.norm(held.positions[i][k, :2] - mean_end)
                                     for i, k in held.examples]))
    t, u = figures["trained"], figures["untrained"]
    d, l = t["best"]["step"], t["best"]["layer"]
    card = {
        "format": "pi0viz.reach_tiny/1",
        "description": trained.description,
        "config": {k: v for k, v in vars(reach_config(trained.tokenizer.vocab_size)).items()},
        "tokenizer": trained.tokenizer.name,
        "training": json.loads((args.checkpoint / "train_log.json").read_text()),
        "heldout": {
            "scenes": len(held), "examples": int(len(held.examples)),
            "error_cm": t["error_cm"], "nearest": t["nearest"],
            "chance_nearest": float(np.mean([1.0 / held.present[i].sum() for i, _ in held.examples])),
            "scene_mean_baseline_cm": t["scene_mean_baseline_cm"], "dataset_mean_baseline_cm": dataset_mean_cm,
            **({"target_chunk_cm": t["target_chunk_cm"], "blind_chunk_cm": t["blind_chunk_cm"]}
               if "target_chunk_cm" in t else {}),
            "untrained_error_cm": u["error_cm"],
            "best_cell": {"step": d, "layer": l, "lift": t["best"]["lift"],
                          "untrained_lift": u["lift"]["base_0_rgb"][d][l],
                          "ratio": t["best"]["lift"] / u["lift"]["base_0_rgb"][d][l],
                          "lift_other": t["best"]["lift_other"]},
            "trained": t, "untrained": u,
        },
    }
    card["config"]["image_keys"] = list(card["config"]["image_keys"])
    card["task"] = task
    summary = {k: v for k, v in card["heldout"].items() if k not in ("trained", "untrained")}
    print(json.dumps(summary, indent=1))
    failed = ship_gate(card["heldout"])
    if closed is not None:
        card["closed_loop"] = closed
        print(json.dumps(closed, indent=1))
        failed += closed_loop_gate(closed["model"], closed["untrained"], closed["prompt_blind"])
    for line in failed:
        print(f"not shipped: {line}")
    if failed or args.figures_only:
        raise SystemExit(1 if failed else 0)
    for sub in ("params", "assets"):
        replace_folder(args.out / sub, lambda tmp, sub=sub: shutil.copytree(args.checkpoint / sub, tmp), create=False)
    if not args.keep_scenes:
        ship_scenes(held_files, args.out)
    atomic_write(args.out / "model.json", json.dumps(card, indent=1))
    print(f"shipped into {args.out}")


if __name__ == "__main__":
    ship_command()
