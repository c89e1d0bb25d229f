"""pi0 / pi0.5 (JAX) as a LIBERO policy, the way openpi serves `pi0_libero` / `pi05_libero`, with the attention
capture on request. Named configs (pi0viz.policy.configs) set the model shape and transforms together.

`Policy(params, config, transforms)`: a model and its transform chains (`pi0viz.policy.transforms`, backend-neutral,
built per named config by `pi0viz.policy.configs.make_transforms`). `Policy.infer(obs)`:

    obs -> input chain -> PolicyInputs -> to_observation -> sample_actions (jitted, 10 Euler steps)
        -> output chain -> {"actions": float32[A, action_dims], "policy_timing": {...}
                            [, "attention_bundle": CaptureBundle]}
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

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.images import to_model_range
from pi0viz.errors import ConfigError, ObservationError, PolicyOutputError, RenderError
from pi0viz.model import CaptureOptions, Observation, Pi0Config, SampleOutput, init_params, sample_actions
from pi0viz.policy.configs import DEFAULT_CONFIG, LIBERO_ASSET_ID, PolicyConfig, get_config
from pi0viz.policy.norm_stats import load_norm_stats
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.policy.transforms import LiberoInputs, PadState, PolicyInputs, PolicyTransforms, TokenizePrompt

logger = logging.getLogger(__name__)



def to_observation(inputs: PolicyInputs) -> Observation:
    """The model input with a batch axis of 1 (images float32 in [-1, 1])."""
    return Observation(
        images={k: jnp.asarray(to_model_range(v)[None]) for k, v in inputs.images.items()},
        image_masks={k: jnp.asarray([m], dtype=bool) for k, m in inputs.image_masks.items()},
        state=jnp.asarray(inputs.state[None], dtype=jnp.float32),
        tokenized_prompt=jnp.asarray(inputs.token_ids[None], dtype=jnp.int32),
        tokenized_prompt_mask=jnp.asarray(inputs.token_mask[None], dtype=bool),
    )


class Policy:
    """pi0 or pi0.5 (JAX) and its transform chains behind openpi's LIBERO `infer(obs) -> {"actions": ...}` interface.

    Args:
        params: the model's parameter pytree (openpi paths), already in the compute dtype.
        config: the model config (image keys, horizon, action_dim, max_token_len, vocab).
        transforms: the input and output chains (`pi0viz.policy.configs.make_transforms`); the input chain's
            tokenizer must fit the model's embedding table.
        seed: the policy RNG starts at jax.random.key(seed) (openpi: key(0)) and is split once per call.
        num_steps: Euler steps of the sampler (openpi: 10).
        description: one line saying what this policy is (shown by the CLI and the demo).
    """

    def __init__(self, params: Any, config: Pi0Config, transforms: PolicyTransforms, *, seed: int = 0,
                 num_steps: int = 10, description: str = "") -> None:
        if not isinstance(transforms, PolicyTransforms):
            raise ConfigError(f"Policy takes (params, config, transforms: PolicyTransforms), got "
                              f"{type(transforms).__name__}; build them with pi0viz.policy.configs.make_transforms")
        tokenizer = transforms.tokenizer
        if tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} pieces but the model embeds only "
                f"{config.vocab_size}; use the tokenizer the model was trained with (pi0: PaliGemma's)"
            )
        # The chains are built for one model shape: a mismatch would fail deep inside the jitted sampler.
        pad, cams, tok = (transforms.inputs.find(k) for k in (PadState, LiberoInputs, TokenizePrompt))
        if pad is None or pad.action_dim != config.action_dim:
            raise ConfigError(f"the input chain must pad the state to the model's action_dim {config.action_dim}, "
                              f"got {None if pad is None else pad.action_dim}")
        if cams is not None and tuple(cams.image_keys) != tuple(config.image_keys):
            raise ConfigError(f"the input chain feeds cameras {list(cams.image_keys)}, the model takes "
                              f"{list(config.image_keys)}")
        if tok is not None and tok.max_len != config.max_token_len:
            raise ConfigError(f"the input chain tokenizes to {tok.max_len} prompt slots, the model has "
                              f"{config.max_token_len}")
        self.params = params
        self.config = config
        self.transforms = transforms
        self.tokenizer = tokenizer
        self.norm_stats = transforms.norm_stats
        self.num_steps = num_steps
        family = "pi0.5" if config.pi05 else "pi0"
        self.description = description or f"{family} ({config.paligemma_variant} + {config.action_expert_variant})"
        self._rng = jax.random.key(seed)
        self._rng_lock = threading.Lock()  # a server may call infer from several threads

    @property
    def action_dims(self) -> int:
        """How many action dims `infer` returns (LIBERO: 7)."""
        dims = self.transforms.action_dims
        return self.config.action_dim if dims is None else dims

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | os.PathLike,
        *,
        policy_config: str | PolicyConfig = DEFAULT_CONFIG,
        config: Pi0Config | None = None,
        tokenizer_path: str | os.PathLike | None = None,
        asset_id: str | None = None,
        dtype: str = "bfloat16",
        action_dims: int | None = None,
        default_prompt: str | None = None,
        **kwargs: Any,
    ) -> "Policy":
        """Load an openpi checkpoint directory: <dir>/params and <dir>/assets/<asset_id>/norm_stats.json.

        Args:
            policy_config: a named config (pi0_libero, pi05_libero, pi0_base, pi05_base) or a PolicyConfig:
                the model shape and the transforms.
            config: overrides the named config's model shape; `dtype` overrides its compute dtype.
            tokenizer_path: PaliGemma's paligemma_tokenizer.model; default: openpi's cache, else the bundled
                offline model (with a warning: its ids mean nothing to a trained checkpoint).
            asset_id: norm stats folder under <dir>/assets (default: the named config's).
            action_dims, default_prompt: passed to the config's transform chains (make_transforms).
            kwargs: passed to `Policy(...)` (seed, num_steps, description).
        """
        from pi0viz.model.checkpoint import load_params

        named = get_config(policy_config) if isinstance(policy_config, str) else policy_config
        asset_id = asset_id or named.asset_id
        if asset_id is None:
            raise ConfigError(f"config {named.name} names no norm-stats asset; pass the asset id of the checkpoint's "
                              f"assets/<asset_id>/norm_stats.json (e.g. {LIBERO_ASSET_ID!r})")
        checkpoint_dir = Path(checkpoint_dir)
        config = dataclasses.replace(config or named.model, dtype=dtype)
        # Cheap checks first: norm stats, then every parameter's shape against the config before reading arrays.
        norm_stats = load_norm_stats(checkpoint_dir, asset_id)
        params = load_params(checkpoint_dir / "params", dtype=config.dtype, config=config)
        tokenizer = PromptTokenizer.from_path(tokenizer_path) if tokenizer_path else PromptTokenizer.default()
        if tokenizer.is_bundled:
            logger.warning(
                "using the bundled %s tokenizer with checkpoint %s: its token ids mean nothing to a trained %s; "
                "pass PaliGemma's paligemma_tokenizer.model (--tokenizer PATH)", tokenizer.name, checkpoint_dir,
                "pi0.5" if config.pi05 else "pi0")
        transforms = named.transforms(config, tokenizer, norm_stats, action_dims=action_dims,
                                      default_prompt=default_prompt)
        kwargs.setdefault("description", f"{named.family} checkpoint {checkpoint_dir} ({named.name}, {config.dtype}, "
                                         f"tokenizer {tokenizer.name})")
        return cls(params, config, transforms, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, policy_config: str | PolicyConfig = DEFAULT_CONFIG, *,
             action_dims: int | None = None, default_prompt: str | None = None, **kwargs: Any) -> "Policy":
        """An UNTRAINED tiny pi0 / pi0.5 for offline demos and tests: random weights, bundled tokenizer, identity
        stats, and the named config's pipeline and token layout (pi05_libero: 200 prompt slots, 10 actions).

        Dummy Gemma experts + SigLIP mu/14 in float32, vocab = the bundled tokenizer's. The actions and
        attention are those of random weights: they show the plumbing, not what a trained model looks at.
        """
        named = get_config(policy_config) if isinstance(policy_config, str) else policy_config
        tokenizer = PromptTokenizer.bundled()
        config = named.tiny_model_config(tokenizer.vocab_size)
        params = init_params(config, jax.random.key(seed))
        # Identity stats: mean 0 / std 1, and q01 -1 / q99 1 (quantile normalization maps [-1, 1] to itself).
        stats = {key: {"mean": np.zeros(n), "std": np.ones(n), "q01": -np.ones(n), "q99": np.ones(n)}
                 for key, n in (("state", 8), ("actions", 7))}
        transforms = named.transforms(config, tokenizer, stats, action_dims=action_dims, default_prompt=default_prompt)
        kwargs.setdefault("description", f"UNTRAINED tiny {named.family} ({named.name} pipeline; random weights, "
                                         f"seed {seed}; tokenizer {tokenizer.name})")
        return cls(params, config, transforms, seed=seed, **kwargs)

    # -- the pipeline ----------------------------------------------------------------------------------

    def prepare(self, obs: Mapping[str, Any]) -> PolicyInputs:
        """The input chain on one observation: the inputs exactly as the model sees them (numpy).

        Raises:
            ObservationError naming the key and what was expected.
        """
        return PolicyInputs.from_data(self.transforms.inputs(obs))

    def postprocess(self, model_actions: np.ndarray, model_state: np.ndarray) -> np.ndarray:
        """The output chain: float[A, action_dim] normalized -> float32[A, action_dims] robot units.

        Args:
            model_actions: float[A, action_dim], the sampler's output in normalized units.
            model_state: float32[action_dim], the normalized state the model saw (the delta quirk adds it back).
        """
        out = self.transforms.outputs({"actions": np.asarray(model_actions), "state": np.asarray(model_state)})
        return np.asarray(out["actions"], dtype=np.float32)

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
            noise: float[A, action_dim] initial noise (then the policy RNG is not used); for parity checks.
        Returns:
            {"actions": float32[A, action_dims], "policy_timing": {"infer_ms": float}} and, on request,
            "attention_bundle": CaptureBundle.
        """
        inputs = self.prepare(obs)
        want_bundle = return_bundle or capture is not None
        if want_bundle and capture is None:
            capture = CaptureOptions()
        if noise is not None:
            noise = _as_float32(noise, "noise")
            want = (self.config.action_horizon, self.config.action_dim)
            if noise.shape != want:
                raise ObservationError(f"noise must have shape {list(want)}, got {list(noise.shape)}")
            noise = noise[None]
        start = time.monotonic()
        out = self.infer_observation(to_observation(inputs), capture=capture if want_bundle else None, noise=noise)
        model_actions = np.asarray(jax.device_get(out.actions))[0]
        infer_ms = (time.monotonic() - start) * 1000
        actions = self.postprocess(model_actions, inputs.state)
        if not np.isfinite(actions).all():  # never hand NaN or inf to a robot
            # The observation passed every input check: NaN here is the checkpoint's or the model's fault.
            raise PolicyOutputError("the policy produced non-finite actions for this observation (state "
                                    f"{inputs.raw_state.tolist()}); check the checkpoint, its norm stats and the "
                                    "state's scale")
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
            raise RenderError("sample_actions returned no attention although capture options were given")
        attention = np.asarray(jax.device_get(out.attention))
        if attention.dtype not in (np.float16, np.float32):
            attention = attention.astype(np.float32)  # bfloat16 cannot travel in npz or msgpack-numpy
        side = math.isqrt(self.config.num_image_tokens)
        return inputs.bundle(
            attention, tokenizer=self.tokenizer, camera_names=self.config.image_keys,
            diffusion_times=np.asarray(jax.device_get(out.diffusion_times)), actions=actions,
            num_state_tokens=self.config.num_state_tokens, num_action_tokens=self.config.action_horizon,
            inference_step=inference_step,
            patch_grid=(side, side), heads="max" if capture.fuse_heads else "all",
            queries="actions" if capture.action_rows_only else "suffix",
            keys="prefix" if capture.prefix_keys_only else "all")

    def __repr__(self) -> str:
        return f"Policy({self.description})"


def _as_float32(values: Any, name: str) -> np.ndarray:
    """`values` as float32, the dtype the sampler takes; a finite number that overflows float32 is an error."""
    try:
        raw = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ObservationError(f"{name} must be an array of numbers") from None
    if not np.isfinite(raw).all():
        raise ObservationError(f"{name} contains NaN or inf")
    with np.errstate(over="ignore"):
        out = raw.astype(np.float32)
    if not np.isfinite(out).all():
        raise ObservationError(f"{name} overflows float32 (|values| up to {np.abs(raw).max():.3g}; float32 holds "
                               "up to 3.4e38)")
    return out
