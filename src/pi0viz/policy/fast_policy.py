"""pi0-FAST (JAX) as a LIBERO policy, the way openpi serves `pi0_fast_libero`, with the decoding capture on request.

`FastPolicy(params, config, transforms)`: pi0viz's JAX pi0-FAST (pi0viz.model.pi0_fast) and the chains of a named
FAST config (pi0viz.policy.configs.FastPolicyConfig). `FastPolicy.infer(obs)`:

    obs -> input chain (LIBERO cameras, none masked; quantile state; "Task: ..., State: <bins>;\\n" prompt)
        -> FastObservation -> sample_tokens (jitted greedy decoding, kv cache; capture on request)
        -> output chain (generated ids -> FAST tokens -> DCT coefficients -> actions; unnormalize; absolute(6))
        -> {"actions": float32[H, action_dims], "policy_timing": {...}[, "attention_bundle": DecodeBundle]}

Generated ids that do not decode into a chunk give zero actions, as openpi's FAST tokenizer does; the reason is
logged (a warning) and the bundle still shows every decode step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.core.decode_bundle import DECODE_FORMAT, DecodeBundle
from pi0viz.core.images import to_model_range
from pi0viz.errors import ConfigError, PolicyOutputError
from pi0viz.model.config import Pi0FastConfig
from pi0viz.model.pi0_fast import (
    FastObservation,
    FastSampleOutput,
    decode_bundle_from_output,
    init_fast_params,
    load_fast_params,
    sample_tokens,
)
from pi0viz.policy.configs import DEFAULT_FAST_CONFIG, FastPolicyConfig, get_fast_config
from pi0viz.policy.fast_tokenizer import (
    FAST_SKIP_TOKENS,
    TINY_FAST_TOKENIZER,
    DecodeResult,
    FastActionTokenizer,
    paligemma_to_fast,
)
from pi0viz.policy.norm_stats import load_norm_stats
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.policy.transforms import ExtractFastActions, PolicyTransforms, TokenizeFastPrompt

logger = logging.getLogger(__name__)

FAST_REPO_FOLDER = "models--physical-intelligence--fast"  # the Hugging Face cache folder of physical-intelligence/fast


def hf_cache_fast_tokenizer() -> Path | None:
    """physical-intelligence/fast in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub),
    the snapshot refs/main names (else the newest one holding tokenizer.json), or None. Reads only; downloads
    nothing."""
    if os.environ.get("HF_HUB_CACHE"):
        hub = Path(os.environ["HF_HUB_CACHE"])
    elif os.environ.get("HF_HOME"):
        hub = Path(os.environ["HF_HOME"]) / "hub"
    else:
        hub = Path.home() / ".cache" / "huggingface" / "hub"
    repo = hub.expanduser() / FAST_REPO_FOLDER
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = repo / "snapshots" / ref.read_text().strip()
        if (named / "tokenizer.json").is_file():
            return named
    snapshots = sorted((p for p in (repo / "snapshots").glob("*") if (p / "tokenizer.json").is_file()),
                       key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


class FastPolicy:
    """pi0-FAST (JAX) and its transform chains behind openpi's LIBERO `infer(obs) -> {"actions": ...}` interface.

    Args:
        params: the pi0-FAST parameter pytree (openpi paths), in the compute dtype.
        config: the model config (cameras, prompt slots T, decode steps J, vocabulary, chunk H x D).
        transforms: the chains of a FastPolicyConfig (`FastPolicyConfig.transforms`).
        description: one line saying what this policy is.
    """

    bundle_format = DECODE_FORMAT  # what "attention_bundle/*" carries (the server's metadata says it)

    def __init__(self, params: Any, config: Pi0FastConfig, transforms: PolicyTransforms, *,
                 description: str = "") -> None:
        tok = transforms.inputs.find(TokenizeFastPrompt)
        extract = transforms.outputs.find(ExtractFastActions)
        if tok is None or extract is None:
            raise ConfigError(f"a pi0-FAST policy needs TokenizeFastPrompt and ExtractFastActions in its chains, got "
                              f"{transforms.inputs.names()} and {transforms.outputs.names()}")
        if tok.max_len != config.max_token_len:
            raise ConfigError(f"the input chain tokenizes to {tok.max_len} prompt slots, the model has "
                              f"{config.max_token_len}")
        if tok.tokenizer.vocab_size != config.vocab_size:
            raise ConfigError(f"tokenizer {tok.tokenizer.name!r} has {tok.tokenizer.vocab_size} pieces, the model "
                              f"{config.vocab_size}: pi0-FAST's action tokens are the last ids of the vocabulary")
        self.params = params
        self.config = config
        self.transforms = transforms
        self.tokenizer: PromptTokenizer = tok.tokenizer
        self.fast_tokenizer: FastActionTokenizer = extract.fast
        self.description = description or f"pi0-FAST ({config.paligemma_variant})"

    @property
    def action_dims(self) -> int:
        """How many action dims `infer` returns (LIBERO: 7)."""
        dims = self.transforms.action_dims
        return self.config.action_dim if dims is None else dims

    @property
    def num_steps(self) -> int:
        """J, the most decode steps of one call (the length of the decode-step axis)."""
        return self.config.max_decoding_steps

    @staticmethod
    def capture_options(**kwargs: Any) -> CaptureOptions:
        """Capture options for this policy (fuse_heads, dtype, prefix_keys_only mean what they do for pi0)."""
        return CaptureOptions(**kwargs)

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | os.PathLike,
        *,
        policy_config: str | FastPolicyConfig = DEFAULT_FAST_CONFIG,
        config: Pi0FastConfig | None = None,
        tokenizer_path: str | os.PathLike | None = None,
        fast_tokenizer_path: str | os.PathLike | None = None,
        asset_id: str | None = None,
        dtype: str = "bfloat16",
        action_dims: int | None = None,
        default_prompt: str | None = None,
    ) -> "FastPolicy":
        """Load an openpi pi0-FAST checkpoint: <dir>/params and <dir>/assets/<asset_id>/norm_stats.json.

        Args:
            policy_config: a named FAST config (pi0_fast_libero) or a FastPolicyConfig.
            config: overrides the named config's model shape; `dtype` its compute dtype.
            tokenizer_path: PaliGemma's paligemma_tokenizer.model (default: openpi's cache). Required in effect: the
                FAST tokens are the last ids of PaliGemma's vocabulary, so the bundled tokenizer is refused.
            fast_tokenizer_path: the physical-intelligence/fast folder (tokenizer.json, processor_config.json);
                default: the Hugging Face cache's copy.
            asset_id: norm stats folder under <dir>/assets (default: the config's).
        Raises:
            ConfigError / CheckpointError (one line) before any weight is read when something does not fit.
        """
        named = get_fast_config(policy_config) if isinstance(policy_config, str) else policy_config
        asset_id = asset_id or named.asset_id
        if asset_id is None:
            raise ConfigError(f"config {named.name} names no norm-stats asset; pass the asset id of the checkpoint's "
                              "assets/<asset_id>/norm_stats.json")
        checkpoint_dir = Path(checkpoint_dir)
        config = dataclasses.replace(config or named.model, dtype=dtype)
        norm_stats = load_norm_stats(checkpoint_dir, asset_id)
        tokenizer = PromptTokenizer.from_path(tokenizer_path) if tokenizer_path else PromptTokenizer.default()
        fast_path = fast_tokenizer_path or hf_cache_fast_tokenizer()
        if fast_path is None:
            raise ConfigError("no FAST tokenizer: pass --fast-tokenizer DIR, the physical-intelligence/fast folder "
                              "(tokenizer.json + processor_config.json; pi0viz downloads nothing)")
        fast = FastActionTokenizer.from_path(fast_path)
        transforms = named.transforms(config, tokenizer, fast, norm_stats, action_dims=action_dims,
                                      default_prompt=default_prompt)  # refuses a tokenizer of another vocabulary
        params = load_fast_params(checkpoint_dir / "params", config, dtype=config.compute_dtype)
        description = (f"pi0-FAST checkpoint {checkpoint_dir} ({named.name}, {config.dtype}, tokenizer "
                       f"{tokenizer.name}, {fast.name})")
        return cls(params, config, transforms, description=description)

    @classmethod
    def tiny(cls, seed: int = 0, policy_config: str | FastPolicyConfig = DEFAULT_FAST_CONFIG, *,
             action_dims: int | None = None, default_prompt: str | None = None) -> "FastPolicy":
        """An UNTRAINED tiny pi0-FAST for offline demos and tests: random weights (seeded), the bundled prompt
        tokenizer (its vocabulary is the model's), the shipped tiny FAST tokenizer (src/pi0viz/assets/fast_tiny),
        identity stats, the named config's transforms and chunk shape. Its generated ids are those of random
        weights: they rarely spell "Action: ...", so its actions are mostly openpi's zeros."""
        named = get_fast_config(policy_config) if isinstance(policy_config, str) else policy_config
        tokenizer = PromptTokenizer.bundled()
        config = named.tiny_model_config(tokenizer.vocab_size)
        params = init_fast_params(config, jax.random.key(seed))
        stats = {key: {"mean": np.zeros(n), "std": np.ones(n), "q01": -np.ones(n), "q99": np.ones(n)}
                 for key, n in (("state", 8), ("actions", config.action_dim))}
        fast = FastActionTokenizer.from_path(TINY_FAST_TOKENIZER)
        transforms = named.transforms(config, tokenizer, fast, stats, action_dims=action_dims,
                                      default_prompt=default_prompt)
        description = (f"UNTRAINED tiny pi0-FAST ({named.name} pipeline; random weights, seed {seed}; tokenizer "
                       f"{tokenizer.name}, {fast.name})")
        return cls(params, config, transforms, description=description)

    # -- the pipeline ----------------------------------------------------------------------------------

    def prepare(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The input chain on one observation (numpy): "image", "image_mask", "state" (normalized, unpadded),
        "tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "prompt", "raw_state".

        Raises:
            ObservationError naming the key and what was expected.
        """
        return self.transforms.inputs(obs)

    def observation(self, data: Mapping[str, Any]) -> FastObservation:
        """The model input of a prepared observation, batch 1 (images float32 in [-1, 1])."""
        keys = self.config.image_keys
        return FastObservation(
            images={k: to_model_range(data["image"][k])[None] for k in keys},
            image_masks={k: np.asarray([bool(data["image_mask"][k])]) for k in keys},
            tokenized_prompt=np.asarray(data["tokenized_prompt"], np.int32)[None],
            tokenized_prompt_mask=np.asarray(data["tokenized_prompt_mask"], bool)[None],
            token_ar_mask=np.asarray(data["token_ar_mask"], np.int32)[None],
        )

    def postprocess(self, generated_ids: np.ndarray, model_state: np.ndarray) -> tuple[np.ndarray, DecodeResult]:
        """The output chain: generated ids int[J] -> (float32[H, action_dims] robot actions, the FAST decoding)."""
        out = self.transforms.outputs({"actions": np.asarray(generated_ids), "state": np.asarray(model_state)})
        return np.asarray(out["actions"], np.float32), out["fast_decoding"]

    def infer(self, obs: Mapping[str, Any], *, return_bundle: bool = False, capture: CaptureOptions | None = None,
              inference_step: int | None = None) -> dict[str, Any]:
        """Actions for one LIBERO observation, optionally with the decoding bundle of the call.

        Args:
            obs: openpi's LIBERO request ("observation/image", "observation/wrist_image", "observation/state",
                "prompt").
            return_bundle: also return "attention_bundle", a DecodeBundle (pi0viz.capture/2) of this call.
            capture: what to record (fuse_heads, dtype, prefix_keys_only); implies return_bundle.
            inference_step: index of this call in an episode, stored in the bundle.
        Returns:
            {"actions": float32[H, action_dims], "policy_timing": {"infer_ms"}} and, on request,
            "attention_bundle": DecodeBundle.
        """
        data = self.prepare(obs)
        want_bundle = return_bundle or capture is not None
        if want_bundle and capture is None:
            capture = CaptureOptions()
        start = time.monotonic()
        out = self.sample(self.observation(data), capture=capture if want_bundle else None)
        tokens = np.asarray(jax.device_get(out.tokens))[0]
        infer_ms = (time.monotonic() - start) * 1000
        num_steps = int(out.num_steps)
        actions, decoding = self.postprocess(tokens[:num_steps], data["state"])
        if not decoding.ok:
            logger.warning("pi0-FAST actions are zeros (openpi's FAST decoding fallback): %s", decoding.error)
        if not np.isfinite(actions).all():
            raise PolicyOutputError("the policy produced non-finite actions for this observation; check the "
                                    "checkpoint and its norm stats")
        result: dict[str, Any] = {"actions": actions, "policy_timing": {"infer_ms": infer_ms}}
        if want_bundle:
            result["attention_bundle"] = self.bundle(data, out, inference_step)
        return result

    def sample(self, observation: FastObservation, *, capture: CaptureOptions | None = None) -> FastSampleOutput:
        """`sample_tokens` (jitted; compiled once per capture setting) on a prepared observation."""
        return sample_tokens(self.params, self.config, observation, capture=capture)

    # -- the decoding bundle -----------------------------------------------------------------------------

    def piece(self, token_id: int) -> str:
        """Display text of a generated id: "<FAST t>" for ids in the FAST range (vocab - 1 - 128 - t), else the
        prompt tokenizer's piece ("Action", ":", "|", "<eos>" ...)."""
        t = int(paligemma_to_fast(int(token_id), self.config.vocab_size))
        if 0 <= t < self.fast_tokenizer.vocab_size and int(token_id) < self.config.vocab_size - FAST_SKIP_TOKENS:
            return f"<FAST {t}>"
        return self.tokenizer.piece(int(token_id))

    def bundle(self, data: Mapping[str, Any], out: FastSampleOutput, inference_step: int | None) -> DecodeBundle:
        """One call's decode attention with the images and prompt the model saw (B = 1)."""
        keys = self.config.image_keys
        ids = np.asarray(data["tokenized_prompt"], np.int32)
        mask = np.asarray(data["tokenized_prompt_mask"], bool)
        return decode_bundle_from_output(
            out, self.config, images=np.stack([data["image"][k] for k in keys])[None],
            token_ids=ids[None], token_mask=mask[None], token_pieces=self.tokenizer.pieces(ids, mask)[None],
            image_masks=np.asarray([[bool(data["image_mask"][k]) for k in keys]]), piece=self.piece,
            prompt=[str(data.get("prompt", ""))], inference_step=inference_step)

    def __repr__(self) -> str:
        return f"FastPolicy({self.description})"
