"""pi0viz's small trained pi0 ("reach-tiny"): the demo's default model, trained by `pi0viz.training`.

It learned one task on LIBERO scenes: the prompt "reach the <object>" names one of the 2-4 objects on the floor
(libero_object's scenes in random layouts, objects of DISTINCT_KINDS in view) and the action chunk moves the
gripper to hover over it. The right place to look is known by construction, so its attention maps can be checked
against object masks (docs/reach_tiny.md).

Shipped in openpi's checkpoint layout under `pi0viz/assets/reach_tiny/`:
    params/                                  orbax PyTree (top-level key "params"), float32, ~0.5 M values
    assets/pi0viz/reach/norm_stats.json      z-score stats of the 8-d state and 7-d actions
    model.json                               the model config, the tokenizer, training and evaluation figures
    heldout_scenes.npz                       held-out scenes (never trained on) with their object masks
The tokenizer is pi0viz's bundled one (assets/tokenizer/), as the model was trained with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pi0viz.errors import CheckpointError
from pi0viz.model.config import Pi0Config

REACH_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "reach_tiny"
REACH_ASSET_ID = "pi0viz/reach"
REACH_DESCRIPTION = "reach-tiny: pi0viz's small pi0 trained to reach the object the prompt names (0.45 M params)"


def reach_config(vocab_size: int) -> Pi0Config:
    """The trained model's shape: openpi's tiny pi0 with 2 query heads of 32, 8-d actions, 10 action tokens, one
    camera (LIBERO's agentview, which sees every object) and 16 prompt slots. The prefix is 256 + 16 = 272
    tokens instead of pi0's 816: a batch-16 training step took 1.2 s instead of 4.1 s with both LIBERO cameras
    (528 tokens; measured on 2 busy CPU cores)."""
    return Pi0Config(paligemma_variant="dummy_2x32", action_expert_variant="dummy_2x32", siglip_variant="mu/14",
                     action_dim=8, action_horizon=10, max_token_len=16, dtype="float32", vocab_size=vocab_size,
                     image_keys=("base_0_rgb",))


def initial_params(config: Pi0Config, seed: int = 0) -> Any:
    """The untrained model training starts from: `init_params(config, key(seed))` with SigLIP's learned position
    embedding started as a 2-D sine/cosine code (`posemb_sincos_2d`), so patches differ from step 0."""
    import jax
    import jax.numpy as jnp

    from pi0viz.model.init import init_params, posemb_sincos_2d

    params = init_params(config, jax.random.key(seed))
    img = params["PaliGemma"]["img"]
    rows = int(round(config.num_image_tokens ** 0.5))
    img["pos_embedding"] = jnp.asarray(posemb_sincos_2d(rows, img["pos_embedding"].shape[-1]))
    return params


def reach_transforms(config: Pi0Config, tokenizer: Any, norm_stats: Any) -> Any:
    """The transform chains around the model (configs.PIPELINES["reach_tiny"]): LIBERO's request with the
    agentview only, z-score, no delta actions, LIBERO's 7 action dims."""
    from pi0viz.policy.configs import make_transforms

    return make_transforms(config, tokenizer, norm_stats, pipeline="reach_tiny")


def heldout_scenes(model_dir: Path = REACH_MODEL_DIR) -> Any:
    """The held-out scenes that ship with the model (`ReachScenes`): two random layouts per libero_object task,
    never trained on, with every object's position and mask."""
    from pi0viz.policy.reach_task import ReachScenes

    path = Path(model_dir) / "heldout_scenes.npz"
    if not path.is_file():
        raise CheckpointError(f"no held-out scenes at {path}")
    return ReachScenes.load([path])


def model_card(model_dir: Path = REACH_MODEL_DIR) -> dict[str, Any]:
    """model.json of a reach-tiny checkpoint folder."""
    path = Path(model_dir) / "model.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the reach-tiny model card {path}: {err}") from None


def is_reach_checkpoint(model_dir: Path) -> bool:
    """True when a folder is a reach-tiny checkpoint (params/ and a model.json of format pi0viz.reach_tiny/1)."""
    try:
        card = json.loads((Path(model_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and card.get("format") == "pi0viz.reach_tiny/1" and (Path(model_dir) / "params").is_dir()


def reach_task_of(model_dir: Path = REACH_MODEL_DIR) -> dict[str, Any]:
    """{"chunk": ..., "action_unit_m": ...}: the task a reach-tiny checkpoint was trained on (model.json "task");
    checkpoints from before the calibration have none: min-jerk chunks in the 5 cm unit."""
    from pi0viz.policy.reach_task import SHIPPED_ACTION_UNIT_M

    try:
        card = model_card(model_dir)
    except CheckpointError:
        card = {}
    task = card.get("task") or {}
    return {"chunk": str(task.get("chunk", "min_jerk")),
            "action_unit_m": float(task.get("action_unit_m", SHIPPED_ACTION_UNIT_M))}


def load_reach_policy(model_dir: Path = REACH_MODEL_DIR, *, seed: int = 0) -> Any:
    """The trained reach-tiny model as a LIBERO `Policy` (JAX)."""
    from pi0viz.model.checkpoint import load_params
    from pi0viz.policy.jax_policy import Policy
    from pi0viz.policy.norm_stats import load_norm_stats
    from pi0viz.policy.tokenizer import PromptTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "params").is_dir():
        raise CheckpointError(f"no reach-tiny checkpoint at {model_dir} (expected params/ and model.json there)")
    tokenizer = PromptTokenizer.bundled()  # the tokenizer it was trained with
    config = reach_config(tokenizer.vocab_size)
    norm_stats = load_norm_stats(model_dir, REACH_ASSET_ID)
    params = load_params(model_dir / "params", dtype=config.dtype, config=config)
    return Policy(params, config, reach_transforms(config, tokenizer, norm_stats), seed=seed,
                  description=REACH_DESCRIPTION)
