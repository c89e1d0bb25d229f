"""Held-out evaluation of a reach model: does it reach the named object, and does it look at it?

For examples (scene, named object) of held-out scenes, with the policy's own transforms and a fixed noise:

    error_cm        |endpoint_xy - object_xy| of the predicted chunk (the gripper's floor position at its end)
    nearest         the endpoint is nearer the named object than any other object in view (chance 1 / objects)
    baselines       the same error for answers that ignore the prompt: the scene's mean object position (knows
                    where every object is, not which one is meant) and the training set's mean endpoint
    lift            pi0viz.analysis.grounding's lift (the action tokens' head-mean attention share on the named
                    object's patches over its area share; 1 = no better than uniform) per denoising step and
                    layer, averaged over action tokens and examples, for the agentview and the wrist camera;
                    `lift_other` the same for the union of the other objects in view

Needs only the `[jax]` extra (the test of the shipped model runs it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from pi0viz.analysis.grounding import camera_metrics
from pi0viz.core.capture_options import CaptureOptions
from pi0viz.model import sample_actions
from pi0viz.model.pi0 import Observation
from pi0viz.policy.reach_task import (HOVER_M, SHIPPED_ACTION_UNIT_M, ReachScenes, chunk_endpoint, hover_point,
                                      make_chunk)

COVERAGE_INDEX = {"base_0_rgb": 0, "left_wrist_0_rgb": 1}  # camera slot -> index in a scene's coverage


@dataclasses.dataclass
class ReachEval:
    """Per-example results: error_cm/nearest/scene_mean_cm float[E]; lift, lift_other float32[E, C, D, L] over
    the model's cameras `cameras` (the first is the agentview)."""

    error_cm: np.ndarray
    nearest: np.ndarray
    scene_mean_cm: np.ndarray
    lift: np.ndarray
    lift_other: np.ndarray
    cameras: tuple[str, ...]
    target_cm: np.ndarray | None = None  # |endpoint - the target chunk's endpoint| (3-D), when the task was given
    blind_target_cm: np.ndarray | None = None  # the same for the task's chunk toward the objects' mean hover point

    def summary(self) -> dict[str, Any]:
        """Means over examples; lift tables [camera][step][layer]; the best (step, layer) of the agentview."""
        lift = np.nanmean(self.lift, axis=0)  # [C, D, L]
        other = np.nanmean(self.lift_other, axis=0)
        d, l = np.unravel_index(int(np.nanargmax(lift[0])), lift[0].shape)
        out = {} if self.target_cm is None else {"target_chunk_cm": float(self.target_cm.mean()),
                                                 "blind_chunk_cm": float(self.blind_target_cm.mean())}
        return out | {
            "examples": int(self.error_cm.shape[0]),
            "error_cm": float(self.error_cm.mean()),
            "nearest": float(self.nearest.mean()),
            "scene_mean_baseline_cm": float(self.scene_mean_cm.mean()),
            "lift": {cam: np.round(lift[c], 3).tolist() for c, cam in enumerate(self.cameras)},
            "lift_other": {cam: np.round(other[c], 3).tolist() for c, cam in enumerate(self.cameras)},
            "best": {"camera": self.cameras[0], "step": int(d), "layer": int(l), "lift": float(lift[0, d, l]),
                     "lift_other": float(other[0, d, l])},
            "last_layer_mean_over_steps": {cam: float(lift[c, :, -1].mean()) for c, cam in enumerate(self.cameras)},
        }


def batch_observation(policy: Any, scenes: ReachScenes, examples: np.ndarray) -> Observation:
    """The model input for examples [B, 2] (scene, object), through the policy's own LIBERO transforms."""
    from pi0viz.core.images import to_model_range

    inputs = [policy.prepare(scenes.observation(int(i), int(k))) for i, k in examples]
    return Observation(
        images={c: np.stack([to_model_range(x.images[c]) for x in inputs]).astype(np.float32)
                for c in policy.config.image_keys},
        image_masks={c: np.array([x.image_masks[c] for x in inputs]) for c in policy.config.image_keys},
        state=np.stack([x.state for x in inputs]).astype(np.float32),
        tokenized_prompt=np.stack([x.token_ids for x in inputs]).astype(np.int32),
        tokenized_prompt_mask=np.stack([x.token_mask for x in inputs]).astype(bool))


def concat_observations(parts: list[Observation]) -> Observation:
    """Observations joined along the batch axis."""
    return Observation(
        images={c: np.concatenate([p.images[c] for p in parts]) for c in parts[0].images},
        image_masks={c: np.concatenate([p.image_masks[c] for p in parts]) for c in parts[0].image_masks},
        state=np.concatenate([p.state for p in parts]),
        tokenized_prompt=np.concatenate([p.tokenized_prompt for p in parts]),
        tokenized_prompt_mask=np.concatenate([p.tokenized_prompt_mask for p in parts]))


def evaluate(policy: Any, scenes: ReachScenes, examples: np.ndarray, *, batch: int = 8, seed: int = 0,
             capture: bool = True, unit_m: float = SHIPPED_ACTION_UNIT_M, chunk: str | None = None) -> ReachEval:
    """Run `policy` (a pi0viz JAX Policy) on examples [E, 2] of `scenes` and measure them (module docstring);
    the chunks are read in `unit_m` metres per action (the unit the model was trained in: its model.json).
    `chunk` (a reach_task chunk maker): also measure the distance to the target chunk's endpoint (`target_cm`):
    the open-loop figure of a closed-loop task, whose chunk need not end at the object."""
    cfg = policy.config
    task_chunk = chunk  # `chunk` names each batch of examples below
    rng = np.random.default_rng(seed)
    noise_all = rng.standard_normal((len(examples), cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    opts = CaptureOptions(action_rows_only=True, prefix_keys_only=True) if capture else None
    errors, nearest, scene_mean, lifts, others, target, blind_target = [], [], [], [], [], [], []
    n_img = cfg.num_image_tokens
    cameras = tuple(cfg.image_keys)
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        obs = batch_observation(policy, scenes, chunk)
        out = sample_actions(policy.params, cfg, jax.random.key(0), obs, noise=noise_all[start:start + len(chunk)],
                             capture=opts)
        actions = np.asarray(out.actions)
        att = None if out.attention is None else np.asarray(out.attention).mean(axis=(3, 4))  # [D, L, B, A, P]
        for b, (i, k) in enumerate(chunk):
            i, k = int(i), int(k)
            robot = policy.postprocess(actions[b], np.asarray(obs.state[b]))  # [A, 7] LIBERO units
            eef = scenes.state[i, :3]
            end = chunk_endpoint(eef, robot, unit_m)[:2]
            present = np.flatnonzero(scenes.present[i])
            pos = scenes.positions[i][:, :2]
            dist = np.linalg.norm(pos[present] - end, axis=-1)
            errors.append(100 * np.linalg.norm(pos[k] - end))
            if task_chunk is not None:
                want = chunk_endpoint(eef, scenes.chunk(i, k, kind=task_chunk, unit_m=unit_m), unit_m)
                target.append(100 * np.linalg.norm(chunk_endpoint(eef, robot, unit_m) - want))
                # prompt-blind: the task's chunk toward the mean hover point of the objects in view
                hover = np.mean([hover_point(scenes.positions[i][j], scenes.labels[i][j]) for j in present], axis=0)
                blind = make_chunk(task_chunk, eef, hover - [0.0, 0.0, HOVER_M], unit_m=unit_m)
                blind_target.append(100 * np.linalg.norm(chunk_endpoint(eef, blind, unit_m) - want))
            nearest.append(float(present[int(dist.argmin())] == k))
            scene_mean.append(100 * np.linalg.norm(pos[k] - pos[present].mean(axis=0)))
            if att is None:
                continue
            D, L, _, A, _ = att.shape
            lift = np.full((len(cameras), D, L), np.nan, np.float32)
            other = np.full((len(cameras), D, L), np.nan, np.float32)
            others_k = [j for j in present if j != k]
            for c, cam in enumerate(cameras):
                x = att[:, :, b, :, c * n_img:(c + 1) * n_img].reshape(D * L * A, n_img)
                cov = scenes.coverage[i][:, COVERAGE_INDEX[cam]].reshape(len(scenes.positions[i]), n_img)
                if cov[k].sum() > 0:
                    lift[c] = camera_metrics(x, cov[k])["lift"].reshape(D, L, A).mean(axis=-1)
                rest = np.clip(cov[others_k].sum(axis=0), 0, 1) if others_k else np.zeros(n_img)
                if rest.sum() > 0:
                    other[c] = camera_metrics(x, rest)["lift"].reshape(D, L, A).mean(axis=-1)
            lifts.append(lift)
            others.append(other)
    empty = np.zeros((0, len(cameras), 0, 0), np.float32)
    return ReachEval(np.asarray(errors), np.asarray(nearest), np.asarray(scene_mean),
                     np.stack(lifts) if lifts else empty, np.stack(others) if others else empty, cameras,
                     np.asarray(target) if task_chunk is not None else None,
                     np.asarray(blind_target) if task_chunk is not None else None)
