"""pi0 as a LIBERO policy, the way openpi serves `pi0_libero`, with the attention capture on request.

One `Policy.infer(obs)` call runs openpi's inference transform chain, written out here in order:

    obs (LIBERO client keys)                       "observation/image" uint8[h, w, 3], "observation/wrist_image",
      |                                            "observation/state" float[8], "prompt" str
      | cameras -> base_0_rgb, left_wrist_0_rgb;   right_wrist_0_rgb = zeros, mask False (pi0 masks it out)
      | resize_with_pad to 224 x 224               (PIL bilinear, aspect kept, centered black bars)
      | state z-score (x - mean) / (std + 1e-6)    then zero-padded to action_dim = 32
      | prompt -> BOS + tokens + "\\n", pad to 48
      | uint8 -> x / 255 * 2 - 1, add batch axis
    sample_actions (jitted, 10 Euler steps)        -> actions [1, 50, 32] in normalized units
      | unnormalize x * (std + 1e-6) + mean        (mean padded with 0, std with 1 to 32 dims)
      | pi0_libero delta quirk: actions[:, :6] += state[:6]
      | first 7 dims
    {"actions": float32[50, 7], "policy_timing": {...}[, "attention_bundle": CaptureBundle]}

The pi0_libero checkpoint was trained with an extra DeltaActions transform on LIBERO's already-delta
actions, so its outputs must be re-absolutized with the state (openpi issues #420, #750); other
checkpoints may need `delta_actions=False`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.bundle import CaptureBundle
from pi0viz.model import CaptureOptions, Observation, Pi0Config, SampleOutput, init_params, sample_actions
from pi0viz.model.config import IMAGE_RESOLUTION
from pi0viz.model.image_tools import resize_with_pad, to_model_range, to_uint8_image
from pi0viz.model.tokenizer import PromptTokenizer

logger = logging.getLogger(__name__)

NORM_EPS = 1e-6  # openpi's z-score epsilon
LIBERO_IMAGE_KEYS = {"observation/image": "base_0_rgb", "observation/wrist_image": "left_wrist_0_rgb"}
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
LIBERO_ASSET_ID = "physical-intelligence/libero"
NormStats = Mapping[str, Mapping[str, np.ndarray]]


@dataclasses.dataclass
class PolicyInputs:
    """One observation after openpi's input transforms, before batching (numpy, no JAX).

    Attributes:
        images: {camera: uint8[224, 224, 3]} in config.image_keys order (what the model sees, pad bars included).
        image_masks: {camera: bool}; False for a camera the robot does not have (zeros, keys masked).
        state: float32[action_dim], z-scored and zero-padded.
        token_ids: int32[max_token_len]; token_mask: bool[max_token_len].
        raw_state: float64[d], the state as received.
        prompt: the raw prompt.
    """

    images: dict[str, np.ndarray]
    image_masks: dict[str, bool]
    state: np.ndarray
    token_ids: np.ndarray
    token_mask: np.ndarray
    raw_state: np.ndarray
    prompt: str

    def to_observation(self) -> Observation:
        """The model input with a batch axis of 1 (images float32 in [-1, 1])."""
        return Observation(
            images={k: jnp.asarray(to_model_range(v)[None]) for k, v in self.images.items()},
            image_masks={k: jnp.asarray([m], dtype=bool) for k, m in self.image_masks.items()},
            state=jnp.asarray(self.state[None], dtype=jnp.float32),
            tokenized_prompt=jnp.asarray(self.token_ids[None], dtype=jnp.int32),
            tokenized_prompt_mask=jnp.asarray(self.token_mask[None], dtype=bool),
        )


class Policy:
    """pi0 + tokenizer + norm stats behind openpi's LIBERO `infer(obs) -> {"actions": ...}` interface.

    Args:
        params: the model's parameter pytree (openpi paths), already in the compute dtype.
        config: the model config (image keys, horizon, action_dim, max_token_len, vocab).
        tokenizer: the prompt tokenizer; its vocabulary must fit the model's embedding table.
        norm_stats: {"state": {"mean", "std"}, "actions": {"mean", "std"}} as in openpi's norm_stats.json.
        seed: the policy RNG starts at jax.random.key(seed) (openpi: key(0)) and is split once per call.
        delta_actions: pi0_libero quirk, actions[..., :6] += state[:6] after unnormalizing.
        action_dims: how many action dims to return (LIBERO: 7).
        num_steps: Euler steps of the sampler (openpi: 10).
        default_prompt: used when an observation has no "prompt".
        description: one line saying what this policy is (shown by the CLI and the demo).
    """

    def __init__(
        self,
        params: Any,
        config: Pi0Config,
        tokenizer: PromptTokenizer,
        norm_stats: NormStats,
        *,
        seed: int = 0,
        delta_actions: bool = True,
        action_dims: int = 7,
        num_steps: int = 10,
        default_prompt: str | None = None,
        description: str = "",
    ) -> None:
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} pieces but the model embeds only "
                f"{config.vocab_size}; use the tokenizer the model was trained with (pi0: PaliGemma's)"
            )
        if not 1 <= action_dims <= config.action_dim:
            raise ValueError(f"action_dims must be in [1, {config.action_dim}], got {action_dims}")
        if delta_actions and action_dims < 6:
            raise ValueError(
                f"delta_actions adds the state to action dims 0-5, so action_dims must be >= 6, got {action_dims}")
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.norm_stats = _check_norm_stats(norm_stats, config.action_dim)
        self.delta_actions = delta_actions
        self.action_dims = action_dims
        self.num_steps = num_steps
        self.default_prompt = default_prompt
        self.description = description or f"pi0 ({config.paligemma_variant} + {config.action_expert_variant})"
        self._rng = jax.random.key(seed)
        self._rng_lock = threading.Lock()  # a server may call infer from several threads

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | os.PathLike,
        *,
        config: Pi0Config | None = None,
        tokenizer_path: str | os.PathLike | None = None,
        asset_id: str = LIBERO_ASSET_ID,
        dtype: str = "bfloat16",
        **kwargs: Any,
    ) -> "Policy":
        """Load an openpi checkpoint directory: <dir>/params and <dir>/assets/<asset_id>/norm_stats.json.

        Args:
            config: model shape (default: full-size pi0); `dtype` overrides its compute dtype.
            tokenizer_path: PaliGemma's paligemma_tokenizer.model; default: openpi's cache, else the bundled
                offline model (with a warning: its ids mean nothing to a trained checkpoint).
            kwargs: passed to `Policy(...)` (seed, delta_actions, action_dims, ...).
        """
        from pi0viz.model.checkpoint import load_norm_stats, load_params

        checkpoint_dir = Path(checkpoint_dir)
        config = dataclasses.replace(config or Pi0Config.pi0(), dtype=dtype)
        tokenizer = PromptTokenizer.from_path(tokenizer_path) if tokenizer_path else PromptTokenizer.default()
        if tokenizer.is_bundled:
            logger.warning(
                "using the bundled %s tokenizer with checkpoint %s: its token ids mean nothing to a trained pi0; "
                "pass PaliGemma's paligemma_tokenizer.model (--tokenizer PATH)", tokenizer.name, checkpoint_dir)
        params = load_params(checkpoint_dir / "params", dtype=config.dtype)
        norm_stats = load_norm_stats(checkpoint_dir, asset_id)
        kwargs.setdefault("description",
                          f"pi0 checkpoint {checkpoint_dir} ({config.dtype}, tokenizer {tokenizer.name})")
        return cls(params, config, tokenizer, norm_stats, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> "Policy":
        """An UNTRAINED tiny pi0 for offline demos and tests: random weights, bundled tokenizer, identity stats.

        Dummy Gemma experts + SigLIP mu/14 in float32, vocab = the bundled tokenizer's. The actions and
        attention are those of random weights: they show the plumbing, not what a trained pi0 looks at.
        """
        tokenizer = PromptTokenizer.bundled()
        config = Pi0Config.tiny(vocab_size=tokenizer.vocab_size)
        params = init_params(config, jax.random.key(seed))
        stats = {
            "state": {"mean": np.zeros(8), "std": np.ones(8)},
            "actions": {"mean": np.zeros(7), "std": np.ones(7)},
        }
        kwargs.setdefault("description",
                          f"UNTRAINED tiny pi0 (random weights, seed {seed}; tokenizer {tokenizer.name})")
        return cls(params, config, tokenizer, stats, seed=seed, **kwargs)

    # -- the pipeline ----------------------------------------------------------------------------------

    def prepare(self, obs: Mapping[str, Any]) -> PolicyInputs:
        """openpi's LiberoInputs + Normalize + ResizeImages + TokenizePrompt + PadStates, for one observation."""
        if not isinstance(obs, Mapping):
            raise TypeError(f"obs must be a dict with keys {[*LIBERO_IMAGE_KEYS, STATE_KEY, PROMPT_KEY]}, "
                            f"got {type(obs).__name__}")
        missing = [k for k in [*LIBERO_IMAGE_KEYS, STATE_KEY] if k not in obs]
        if missing:
            raise KeyError(f"observation is missing {missing}; a LIBERO observation has "
                           f"{[*LIBERO_IMAGE_KEYS, STATE_KEY, PROMPT_KEY]} (got keys {sorted(obs)})")
        h, w = IMAGE_RESOLUTION
        images: dict[str, np.ndarray] = {}
        masks: dict[str, bool] = {}
        given = {cam: obs[key] for key, cam in LIBERO_IMAGE_KEYS.items()}
        for cam in self.config.image_keys:
            if cam in given:
                images[cam] = resize_with_pad(to_uint8_image(given[cam], name=f"obs[{_key_of(cam)!r}]"), h, w)
                masks[cam] = True
            else:  # LIBERO has no right wrist camera: black image, masked out of attention
                images[cam] = np.zeros((h, w, 3), dtype=np.uint8)
                masks[cam] = False
        raw_state = _check_state(obs[STATE_KEY], self.norm_stats["state"]["mean"].shape[0], self.config.action_dim)
        prompt = _prompt_of(obs, self.default_prompt)
        ids, mask = self.tokenizer.tokenize(prompt, self.config.max_token_len)
        return PolicyInputs(
            images=images,
            image_masks=masks,
            state=self.normalize_state(raw_state),
            token_ids=ids,
            token_mask=mask,
            raw_state=raw_state,
            prompt=prompt,
        )

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """float[d] -> float32[action_dim]: z-score with the first d stats, then zero padding."""
        d = state.shape[-1]
        stats = self.norm_stats["state"]
        z = (state - stats["mean"][:d]) / (stats["std"][:d] + NORM_EPS)
        out = np.zeros(self.config.action_dim, dtype=np.float32)
        out[:d] = z
        return out

    def postprocess(self, model_actions: np.ndarray, model_state: np.ndarray) -> np.ndarray:
        """openpi's Unnormalize + AbsoluteActions (pi0_libero) + LiberoOutputs.

        Args:
            model_actions: float[H, action_dim], the sampler's output in normalized units.
            model_state: float32[action_dim], the normalized state the model saw.
        Returns:
            float32[H, action_dims], robot units.
        """
        a_stats, s_stats = self.norm_stats["actions"], self.norm_stats["state"]
        actions = _unnormalize(np.asarray(model_actions, dtype=np.float64), a_stats, self.config.action_dim)
        if self.delta_actions:
            # openpi adds the *unnormalized model-input state* (normalize -> float32 -> unnormalize), not the raw one.
            state = _unnormalize(np.asarray(model_state, dtype=np.float64), s_stats, self.config.action_dim)
            actions[..., :6] += state[..., :6]
        return actions[..., : self.action_dims].astype(np.float32)

    def infer(
        self,
        obs: Mapping[str, Any],
        *,
        return_bundle: bool = False,
        capture: CaptureOptions | None = None,
        inference_step: int | None = None,
        noise: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Actions for one LIBERO observation, optionally with the attention of every step and layer.

        Args:
            obs: {"observation/image": uint8[h, w, 3], "observation/wrist_image": uint8[h, w, 3],
                "observation/state": float[d], "prompt": str}; float images in [0, 1] and CHW are accepted too.
            return_bundle: also return "attention_bundle", a CaptureBundle of this call.
            capture: what to record (reductions); implies return_bundle. Default: the full suffix attention.
            inference_step: index of this call in an episode, stored in the bundle.
            noise: float[H, action_dim] initial noise (then the policy RNG is not used); for parity checks.
        Returns:
            {"actions": float32[H, action_dims], "policy_timing": {"infer_ms": float}} and, on request,
            "attention_bundle": CaptureBundle.
        """
        inputs = self.prepare(obs)
        want_bundle = return_bundle or capture is not None
        if want_bundle and capture is None:
            capture = CaptureOptions()
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            want = (self.config.action_horizon, self.config.action_dim)
            if noise.shape != want:
                raise ValueError(f"noise must have shape {list(want)}, got {list(noise.shape)}")
            noise = noise[None]
        start = time.monotonic()
        out = self.infer_observation(inputs.to_observation(), capture=capture if want_bundle else None, noise=noise)
        model_actions = np.asarray(jax.device_get(out.actions))[0]
        infer_ms = (time.monotonic() - start) * 1000
        actions = self.postprocess(model_actions, inputs.state)
        result: dict[str, Any] = {"actions": actions, "policy_timing": {"infer_ms": infer_ms}}
        if want_bundle:
            result["attention_bundle"] = self._bundle(inputs, out, capture, actions, inference_step)
        return result

    def infer_observation(
        self,
        observation: Observation,
        *,
        capture: CaptureOptions | None = None,
        noise: np.ndarray | jax.Array | None = None,
    ) -> SampleOutput:
        """`sample_actions` (jitted; compiled once per capture setting) on a prepared, batched Observation.

        Splits the policy RNG first, as openpi's Policy does, so call i of a policy with seed s always
        draws the same noise.
        """
        with self._rng_lock:
            self._rng, rng = jax.random.split(self._rng)
        return sample_actions(self.params, self.config, rng, observation, num_steps=self.num_steps,
                              noise=None if noise is None else jnp.asarray(noise, jnp.float32), capture=capture)

    # -- the capture bundle ------------------------------------------------------------------------------

    def _bundle(
        self,
        inputs: PolicyInputs,
        out: SampleOutput,
        capture: CaptureOptions,
        actions: np.ndarray,
        inference_step: int | None,
    ) -> CaptureBundle:
        """Package one call's attention with the images, tokens and actions the renderer needs (B = 1)."""
        if out.attention is None:
            raise RuntimeError("sample_actions returned no attention although capture options were given")
        cams = list(self.config.image_keys)
        side = int(math.isqrt(self.config.num_image_tokens))
        attention = np.asarray(jax.device_get(out.attention))
        if attention.dtype not in (np.float16, np.float32):
            attention = attention.astype(np.float32)  # bfloat16 cannot travel in npz or msgpack-numpy
        return CaptureBundle(
            attention=attention,
            camera_names=cams,
            images=np.stack([inputs.images[c] for c in cams])[None],  # [1, C, 224, 224, 3]
            image_masks=np.asarray([[inputs.image_masks[c] for c in cams]], dtype=bool),
            token_ids=inputs.token_ids[None].astype(np.int32),
            token_pieces=self.tokenizer.pieces(inputs.token_ids, inputs.token_mask)[None],
            token_mask=inputs.token_mask[None],
            num_state_tokens=1,
            num_action_tokens=self.config.action_horizon,
            diffusion_times=np.asarray(jax.device_get(out.diffusion_times), dtype=np.float32),
            patch_grid=(side, side),
            prompt=np.asarray([inputs.prompt], dtype=str),
            inference_step=inference_step,
            actions=actions[None],
            attention_kind="probs",
            attention_heads="max" if capture.fuse_heads else "all",
            attention_queries="actions" if capture.action_rows_only else "suffix",
            attention_keys="prefix" if capture.prefix_keys_only else "all",
        )

    def __repr__(self) -> str:
        return f"Policy({self.description})"


# -- helpers ---------------------------------------------------------------------------------------------


def _key_of(camera: str) -> str:
    return next(k for k, c in LIBERO_IMAGE_KEYS.items() if c == camera)


def _prompt_of(obs: Mapping[str, Any], default: str | None) -> str:
    prompt = obs.get(PROMPT_KEY, default)
    if prompt is None:
        raise KeyError(f"observation has no {PROMPT_KEY!r} and the policy has no default_prompt")
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    if isinstance(prompt, np.ndarray) and prompt.ndim == 0 and prompt.dtype.kind == "U":
        prompt = str(prompt)
    if not isinstance(prompt, str):
        raise TypeError(f"obs[{PROMPT_KEY!r}] must be a str, got {type(prompt).__name__}")
    return prompt


def _check_state(state: Any, num_stats: int, action_dim: int) -> np.ndarray:
    s = np.asarray(state)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"obs[{STATE_KEY!r}] must be a float array, got dtype {s.dtype}")
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"obs[{STATE_KEY!r}] must be a 1-d vector (LIBERO: 8 floats), got shape {list(s.shape)}")
    if s.shape[0] > min(num_stats, action_dim):
        raise ValueError(f"obs[{STATE_KEY!r}] has {s.shape[0]} dims, but the norm stats cover {num_stats} "
                         f"and the model takes at most {action_dim}")
    if not np.isfinite(s).all():
        raise ValueError(f"obs[{STATE_KEY!r}] contains NaN or inf: {s.tolist()}")
    return s.astype(np.float64)


def _check_norm_stats(stats: NormStats, action_dim: int) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in ("state", "actions"):
        if key not in stats:
            raise KeyError(f"norm stats need {key!r} (with 'mean' and 'std'), got keys {sorted(stats)}")
        entry = {}
        for field in ("mean", "std"):
            if field not in stats[key]:
                raise KeyError(f"norm stats {key!r} need 'mean' and 'std', got {sorted(stats[key])}")
            v = np.asarray(stats[key][field], dtype=np.float64).reshape(-1)
            if v.shape[0] == 0 or v.shape[0] > action_dim or not np.isfinite(v).all():
                raise ValueError(f"norm stats {key}.{field} must be 1..{action_dim} finite numbers, got {v.tolist()}")
            entry[field] = v
        if entry["mean"].shape != entry["std"].shape:
            raise ValueError(f"norm stats {key}: mean has {entry['mean'].shape[0]} dims, std {entry['std'].shape[0]}")
        out[key] = entry
    return out


def _unnormalize(x: np.ndarray, stats: Mapping[str, np.ndarray], action_dim: int) -> np.ndarray:
    """x * (std + 1e-6) + mean over the last axis, stats padded with mean 0 / std 1 to x's width."""
    d = x.shape[-1]
    mean = np.zeros(d)
    std = np.ones(d)
    n = min(d, stats["mean"].shape[0])
    mean[:n], std[:n] = stats["mean"][:n], stats["std"][:n]
    return x * (std + NORM_EPS) + mean
