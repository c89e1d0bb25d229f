"""openpi's LIBERO input and output transforms, backend-neutral (numpy): the same code feeds the JAX model
and PyTorch models, so a camera, a token or a state means the same thing in every backend.

One observation goes through, in order (openpi's LiberoInputs, Normalize, ResizeImages, TokenizePrompt,
PadStates; then Unnormalize, AbsoluteActions for pi0_libero, LiberoOutputs):

    obs (LIBERO client keys)                       "observation/image" uint8[h, w, 3], "observation/wrist_image",
      |                                            "observation/state" float[8], "prompt" str
      | cameras -> base_0_rgb, left_wrist_0_rgb;   right_wrist_0_rgb = zeros, mask False (the model masks it out)
      | resize_with_pad to 224 x 224               (PIL bilinear, aspect kept, centered black bars)
      | state z-score (x - mean) / (std + 1e-6)    then zero-padded to the model's action dim (pi0); pi0.5:
      |                                            quantile (x - q01) / (q99 - q01 + 1e-6) * 2 - 1
      | prompt -> BOS + tokens + "\\n", padded to the model's prompt slots T; pi0.5 with discrete_state_input:
      |           BOS + "Task: {prompt}, State: {state bins};\\nAction: " (the normalized state in 256 bins)
    model (any backend)                            -> actions float[A, action_dim] in normalized units
      | unnormalize x * (std + 1e-6) + mean        (quantile: (x + 1) / 2 * (q99 - q01 + 1e-6) + q01)
      | pi0_libero delta quirk: actions[:, :6] += state[:6]
      | first `action_dims` dims (LIBERO: 7)

The pi0_libero checkpoint was trained with an extra DeltaActions transform on LIBERO's already-delta actions, so
its outputs must be re-absolutized with the state (openpi issues #420, #750); other checkpoints need
`delta_actions=False`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.images import resize_with_pad, to_uint8_image
from pi0viz.errors import ConfigError, ObservationError
from pi0viz.policy.norm_stats import (
    NormStats,
    check_norm_stats,
    quantile_normalize,
    quantile_unnormalize,
    unzscore,
    zscore,
)
from pi0viz.policy.tokenizer import PromptTokenizer

LIBERO_IMAGE_KEYS = {"observation/image": "base_0_rgb", "observation/wrist_image": "left_wrist_0_rgb"}
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
LIBERO_ASSET_ID = "physical-intelligence/libero"
IMAGE_SIZE = (224, 224)  # (height, width) of every model input image, pixels


@dataclasses.dataclass
class PolicyInputs:
    """One observation after the input transforms, before batching.

    Attributes:
        images: {camera: uint8[224, 224, 3]} in the model's camera order (what the model sees, pad bars included).
        image_masks: {camera: bool}; False for a camera the robot does not have (zeros, keys masked).
        state: float32[action_dim], normalized (z-score or quantile) and zero-padded.
        token_ids: int32[T]; token_mask: bool[T] (T = the model's prompt slots).
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


@dataclasses.dataclass
class LiberoTransforms:
    """The transforms of one policy: its cameras, tokenizer, norm stats and action post-processing.

    Attributes:
        tokenizer: the prompt tokenizer (PaliGemma's for real checkpoints).
        norm_stats: {"state": {"mean", "std"[, "q01", "q99"]}, "actions": {...}} as in openpi's norm_stats.json.
        image_keys: the model's camera slots in order (pi0: base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb).
        action_dim: the model's padded state/action width (pi0: 32).
        max_token_len: prompt slots T (pi0: 48).
        delta_actions: pi0_libero quirk, actions[..., :6] += state[:6] after unnormalizing.
        action_dims: how many action dims to return (LIBERO: 7).
        default_prompt: used when an observation has no "prompt".
        normalization: "zscore" (pi0) or "quantile" (pi0.5 and every other openpi model; needs q01/q99).
        discrete_state_input: pi0.5 prompt format with the discretized state in the text (openpi's
            `discrete_state_input`; pi05_libero turns it off).
    """

    tokenizer: PromptTokenizer
    norm_stats: NormStats
    image_keys: Sequence[str]
    action_dim: int
    max_token_len: int
    delta_actions: bool = True
    action_dims: int = 7
    default_prompt: str | None = None
    normalization: str = "zscore"
    discrete_state_input: bool = False

    def __post_init__(self) -> None:
        if self.normalization not in ("zscore", "quantile"):
            raise ConfigError(f"normalization must be 'zscore' or 'quantile', got {self.normalization!r}")
        if not 1 <= self.action_dims <= self.action_dim:
            raise ConfigError(f"action_dims must be in [1, {self.action_dim}], got {self.action_dims}")
        if self.delta_actions and self.action_dims < 6:
            raise ConfigError(
                f"delta_actions adds the state to action dims 0-5, so action_dims must be >= 6, got {self.action_dims}")
        self.norm_stats = check_norm_stats(self.norm_stats, self.action_dim)
        if self.normalization == "quantile":
            for key in ("state", "actions"):
                if "q01" not in self.norm_stats[key] or "q99" not in self.norm_stats[key]:
                    raise ConfigError(f"quantile normalization (pi0.5) needs q01 and q99 in the norm stats' {key!r}, "
                                      f"got {sorted(self.norm_stats[key])}")

    def prepare(self, obs: Mapping[str, Any]) -> PolicyInputs:
        """Input transforms for one observation (see the module docstring).

        Raises:
            ObservationError naming the key and what was expected.
        """
        if not isinstance(obs, Mapping):
            raise ObservationError(f"obs must be a dict with keys {[*LIBERO_IMAGE_KEYS, STATE_KEY, PROMPT_KEY]}, "
                                   f"got {type(obs).__name__}")
        missing = [k for k in [*LIBERO_IMAGE_KEYS, STATE_KEY] if k not in obs]
        if missing:
            raise ObservationError(f"observation is missing {missing}; a LIBERO observation has "
                                   f"{[*LIBERO_IMAGE_KEYS, STATE_KEY, PROMPT_KEY]} (got keys {sorted(map(str, obs))})")
        h, w = IMAGE_SIZE
        images: dict[str, np.ndarray] = {}
        masks: dict[str, bool] = {}
        given = {cam: obs[key] for key, cam in LIBERO_IMAGE_KEYS.items()}
        for cam in self.image_keys:
            if cam in given:
                try:
                    images[cam] = resize_with_pad(to_uint8_image(given[cam], name=f"obs[{_key_of(cam)!r}]"), h, w)
                except ValueError as err:
                    raise ObservationError(str(err)) from None
                masks[cam] = True
            else:  # LIBERO has no right wrist camera: black image, masked out of attention
                images[cam] = np.zeros((h, w, 3), dtype=np.uint8)
                masks[cam] = False
        raw_state = _check_state(obs[STATE_KEY], self.norm_stats["state"]["mean"].shape[0], self.action_dim)
        prompt = _prompt_of(obs, self.default_prompt)
        state = self.normalize_state(raw_state, dtype=np.float64)
        # pi0.5's discrete state: the normalized state before padding, in float64 as openpi's numpy transforms.
        prompt_state = state[: raw_state.shape[0]] if self.discrete_state_input else None
        ids, mask = self.tokenizer.tokenize(prompt, self.max_token_len, state=prompt_state)
        return PolicyInputs(images=images, image_masks=masks, state=state.astype(np.float32),
                            token_ids=ids, token_mask=mask, raw_state=raw_state, prompt=prompt)

    def normalize_state(self, state: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
        """float[d] -> dtype[action_dim]: z-score or quantile with the first d stats, then zero padding.

        Raises:
            ObservationError when a finite input overflows float32 (the model's input dtype).
        """
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as an error
            if self.normalization == "quantile":
                out = quantile_normalize(state, self.norm_stats["state"], self.action_dim)
            else:
                out = zscore(state, self.norm_stats["state"], self.action_dim)
            finite = np.isfinite(out.astype(np.float32)).all()
        if not finite:
            raise ObservationError(f"obs[{STATE_KEY!r}] overflows float32 after normalization "
                                   f"(|values| up to {np.abs(state).max():.3g}); expected robot-scale numbers")
        return out.astype(dtype)

    def postprocess(self, model_actions: np.ndarray, model_state: np.ndarray) -> np.ndarray:
        """Output transforms: float[A, action_dim] normalized -> float32[A, action_dims] robot units.

        Args:
            model_actions: float[A, action_dim], the sampler's output in normalized units.
            model_state: float32[action_dim], the normalized state the model saw.
        """
        unnormalize = quantile_unnormalize if self.normalization == "quantile" else unzscore
        actions = unnormalize(np.asarray(model_actions, dtype=np.float64), self.norm_stats["actions"])
        if self.delta_actions:
            # openpi adds the *unnormalized model-input state* (normalize -> float32 -> unnormalize), not the raw one.
            state = unnormalize(np.asarray(model_state, dtype=np.float64), self.norm_stats["state"])
            actions[..., :6] += state[..., :6]
        return actions[..., : self.action_dims].astype(np.float32)

    def bundle(self, inputs: PolicyInputs, attention: np.ndarray, *, diffusion_times: np.ndarray,
               actions: np.ndarray, num_state_tokens: int, num_action_tokens: int,
               inference_step: int | None = None, patch_grid: tuple[int, int] = (16, 16), heads: str = "all",
               queries: str = "suffix", keys: str = "all") -> CaptureBundle:
        """One call's attention packaged with the images, tokens and actions the model saw (B = 1).

        Args:
            attention: float16/float32[D, L, 1, K, G, Q, S] post-softmax probabilities from any backend.
            diffusion_times: float32[D], t of each denoising step (1 = noise).
            actions: float32[A, action_dims], what the policy returns.
            patch_grid: (rows, cols) of image tokens per camera (SigLIP /14 on 224 x 224: 16 x 16).
            heads / queries / keys: the capture's reductions ("max"/"all", "actions"/"suffix", "prefix"/"all").
        """
        cams = list(self.image_keys)
        return CaptureBundle(
            attention=attention,
            camera_names=cams,
            images=np.stack([inputs.images[c] for c in cams])[None],  # [1, C, 224, 224, 3]
            image_masks=np.asarray([[inputs.image_masks[c] for c in cams]], dtype=bool),
            token_ids=inputs.token_ids[None].astype(np.int32),
            token_pieces=self.tokenizer.pieces(inputs.token_ids, inputs.token_mask)[None],
            token_mask=inputs.token_mask[None],
            num_state_tokens=num_state_tokens,
            num_action_tokens=num_action_tokens,
            diffusion_times=np.asarray(diffusion_times, dtype=np.float32),
            patch_grid=patch_grid,
            prompt=np.asarray([inputs.prompt], dtype=str),
            inference_step=inference_step,
            actions=np.asarray(actions)[None],
            attention_kind="probs",
            attention_heads=heads,
            attention_queries=queries,
            attention_keys=keys,
        )


def _key_of(camera: str) -> str:
    return next(k for k, c in LIBERO_IMAGE_KEYS.items() if c == camera)


def _prompt_of(obs: Mapping[str, Any], default: str | None) -> str:
    prompt = obs.get(PROMPT_KEY, default)
    if prompt is None:
        raise ObservationError(f"observation has no {PROMPT_KEY!r} and the policy has no default_prompt")
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError:
            raise ObservationError(f"obs[{PROMPT_KEY!r}] is bytes that are not UTF-8 text") from None
    if isinstance(prompt, np.ndarray) and prompt.ndim == 0 and prompt.dtype.kind == "U":
        prompt = str(prompt)
    if not isinstance(prompt, str):
        raise ObservationError(f"obs[{PROMPT_KEY!r}] must be a str, got {type(prompt).__name__}")
    return prompt


def _check_state(state: Any, num_stats: int, action_dim: int) -> np.ndarray:
    try:
        s = np.asarray(state)
    except (TypeError, ValueError):
        raise ObservationError(f"obs[{STATE_KEY!r}] must be a 1-d float vector (LIBERO: 8 floats)") from None
    if s.dtype.kind not in "fiu":
        raise ObservationError(f"obs[{STATE_KEY!r}] must be a float array, got dtype {s.dtype}")
    if s.ndim != 1 or s.shape[0] == 0:
        raise ObservationError(
            f"obs[{STATE_KEY!r}] must be a 1-d vector (LIBERO: 8 floats), got shape {list(s.shape)}")
    if s.shape[0] > min(num_stats, action_dim):
        raise ObservationError(f"obs[{STATE_KEY!r}] has {s.shape[0]} dims, but the norm stats cover {num_stats} "
                               f"and the model takes at most {action_dim}")
    if not np.isfinite(s).all():
        raise ObservationError(f"obs[{STATE_KEY!r}] contains NaN or inf: {s.tolist()}")
    return s.astype(np.float64)
