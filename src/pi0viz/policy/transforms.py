"""Small policy transforms, composed into chains the way openpi composes its data transforms. numpy only, so the
same code feeds the JAX model and the PyTorch (LeRobot) policy: a camera, a token or a state means the same thing
in every backend.

Each transform is one job: a callable `data dict -> data dict`. A `Chain` runs several in order; `compose(...)`
builds one (nested chains are flattened). A policy holds two chains, `PolicyTransforms(inputs, outputs)`, and
`pi0viz.policy.configs` names which transforms each named config uses.

The LIBERO input chain (openpi: LiberoInputs, Normalize, InjectDefaultPrompt, ResizeImages, TokenizePrompt,
PadStatesAndActions):

    request (LIBERO client keys)          "observation/image" uint8[h, w, 3], "observation/wrist_image",
      |                                   "observation/state" float[d], "prompt" str
      | LiberoInputs                      "image" {camera: uint8[h, w, 3]}, "image_mask" {camera: bool} in the model's
      |                                   camera order (right_wrist_0_rgb: zeros, mask False); "state" float64[d]
      | NormalizeState                    z-score (x - mean) / (std + 1e-6) (pi0), or quantile
      |                                   (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 (pi0.5), first d stats
      | InjectDefaultPrompt               "prompt" = the policy's default when the request has none
      | ResizeImagesWithPad(224, 224)     PIL bilinear, aspect kept, centered black bars
      | TokenizePrompt                    "tokenized_prompt" int32[T], "tokenized_prompt_mask" bool[T]; pi0.5 with
      |                                   discrete state: "Task: {prompt}, State: {bins};\\nAction: "
      | PadState(action_dim)              zeros up to the model's action_dim (pi0: 32)
    model (any backend)                   -> actions float[A, action_dim], normalized

The output chain (openpi: Unnormalize, AbsoluteActions for pi0_libero, LiberoOutputs):

    {"actions": float[A, action_dim], "state": float32[action_dim]}   (the state the model saw, normalized)
      | UnnormalizeActions                x * (std + 1e-6) + mean, or (x + 1) / 2 * (q99 - q01 + 1e-6) + q01; the
      |                                   state too, so the delta quirk adds robot units
      | AbsoluteActions(6)                pi0_libero's delta quirk: actions[:, :6] += state[:6]
      | SliceActions(action_dims)         the robot's first action_dims dims (LIBERO: 7), float32

The pi0_libero checkpoint was trained with an extra DeltaActions transform on LIBERO's already-delta actions, so
its outputs must be re-absolutized with the state (openpi issues #420, #750); other configs leave it out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.images import resize_with_pad, to_uint8_image
from pi0viz.errors import ConfigError, ObservationError
from pi0viz.policy.norm_stats import NormStats, quantile_normalize, quantile_unnormalize, unzscore, zscore
from pi0viz.policy.tokenizer import PromptTokenizer

LIBERO_IMAGE_KEYS = {"observation/image": "base_0_rgb", "observation/wrist_image": "left_wrist_0_rgb"}
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
LIBERO_KEYS = (*LIBERO_IMAGE_KEYS, STATE_KEY, PROMPT_KEY)
IMAGE_SIZE = (224, 224)  # (height, width) of every model input image, pixels
NORMALIZATIONS = ("zscore", "quantile")

Data = dict[str, Any]
Transform = Callable[[Data], Data]
T = TypeVar("T")


# -- the chain ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chain:
    """Transforms applied in order; each takes the data dict and returns the next one.

    Attributes:
        transforms: the steps, first applied first.
    """

    transforms: tuple[Transform, ...] = ()

    def __call__(self, data: Mapping[str, Any]) -> Data:
        out = dict(data) if isinstance(data, Mapping) else data  # the caller's dict is never modified
        for transform in self.transforms:
            out = transform(out)
        return out

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def find(self, kind: type[T]) -> T | None:
        """The first step of type `kind`, or None (e.g. the chain's tokenizer step)."""
        return next((t for t in self.transforms if isinstance(t, kind)), None)

    def names(self) -> list[str]:
        """The steps' class names, in order (for descriptions and docs)."""
        return [type(t).__name__ for t in self.transforms]


def compose(*transforms: Transform | Chain | None) -> Chain:
    """One chain of the given transforms, in order; nested chains are flattened and None is skipped."""
    steps: list[Transform] = []
    for t in transforms:
        if t is None:
            continue
        steps.extend(t.transforms if isinstance(t, Chain) else (t,))
    return Chain(tuple(steps))


@dataclasses.dataclass(frozen=True)
class PolicyTransforms:
    """What stands around a model: the input chain (request -> model inputs) and the output chain (model actions
    -> robot actions). A `Policy` takes a model and one of these (`pi0viz.policy.configs.make_transforms`)."""

    inputs: Chain
    outputs: Chain

    @property
    def tokenizer(self) -> PromptTokenizer:
        """The prompt tokenizer of the input chain."""
        step = self.inputs.find(TokenizePrompt)
        if step is None:
            raise ConfigError(f"the input chain {self.inputs.names()} has no TokenizePrompt step")
        return step.tokenizer

    @property
    def norm_stats(self) -> NormStats | None:
        """The norm stats of the output chain's UnnormalizeActions step (None: it has none)."""
        step = self.outputs.find(UnnormalizeActions)
        return None if step is None else step.stats

    @property
    def action_dims(self) -> int | None:
        """How many action dims the output chain returns (None: no SliceActions step)."""
        step = self.outputs.find(SliceActions)
        return None if step is None else step.action_dims


# -- input transforms ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InjectDefaultPrompt:
    """Sets "prompt" to `prompt` when the request carries none (openpi's InjectDefaultPrompt)."""

    prompt: str | None

    def __call__(self, data: Data) -> Data:
        if self.prompt is not None and PROMPT_KEY not in data:
            data[PROMPT_KEY] = self.prompt
        return data


@dataclasses.dataclass(frozen=True)
class LiberoInputs:
    """LIBERO client keys -> the model's cameras, state and prompt (openpi's LiberoInputs).

    In: "observation/image", "observation/wrist_image" uint8[h, w, 3] (float in [0, 1] and CHW accepted),
    "observation/state" float[d], "prompt" str. Out: "image" {camera: uint8[h, w, 3]} and "image_mask"
    {camera: bool} for every camera of `image_keys` in order; a camera LIBERO lacks (right_wrist_0_rgb) is a
    black 224 x 224 image with mask False, so the model masks it out. "state" float64[d], "prompt" str.

    Raises:
        ObservationError naming the key and what was expected.
    """

    image_keys: tuple[str, ...]

    def __call__(self, data: Data) -> Data:
        if not isinstance(data, Mapping):
            raise ObservationError(f"obs must be a dict with keys {list(LIBERO_KEYS)}, got {type(data).__name__}")
        missing = [k for k in [*LIBERO_IMAGE_KEYS, STATE_KEY] if k not in data]
        if missing:
            raise ObservationError(f"observation is missing {missing}; a LIBERO observation has "
                                   f"{list(LIBERO_KEYS)} (got keys {sorted(map(str, data))})")
        given = {cam: key for key, cam in LIBERO_IMAGE_KEYS.items()}
        images: dict[str, np.ndarray] = {}
        masks: dict[str, bool] = {}
        for cam in self.image_keys:
            if cam in given:
                try:
                    images[cam] = to_uint8_image(data[given[cam]], name=f"obs[{given[cam]!r}]")
                except ValueError as err:
                    raise ObservationError(str(err)) from None
                masks[cam] = True
            else:  # LIBERO has no right wrist camera: black image, masked out of attention
                images[cam] = np.zeros((*IMAGE_SIZE, 3), dtype=np.uint8)
                masks[cam] = False
        state = check_state(data[STATE_KEY])
        out: Data = {"image": images, "image_mask": masks, "state": state, "raw_state": state}
        if PROMPT_KEY in data:
            out[PROMPT_KEY] = prompt_of(data)
        return out


@dataclasses.dataclass(frozen=True)
class ResizeImagesWithPad:
    """Every "image" to uint8[height, width, 3]: scaled to fit with the aspect kept, centered on black
    (pi0viz.core.images.resize_with_pad; openpi's ResizeImages). A 224 x 224 image passes untouched."""

    height: int = IMAGE_SIZE[0]
    width: int = IMAGE_SIZE[1]

    def __call__(self, data: Data) -> Data:
        data["image"] = {cam: resize_with_pad(img, self.height, self.width) for cam, img in data["image"].items()}
        return data


@dataclasses.dataclass(frozen=True)
class NormalizeState:
    """"state" float[d] -> float64[d], normalized with the first d stats (openpi's Normalize on the state).

    z-score: (x - mean) / (std + 1e-6), rounded through float32 as the model input is; quantile (pi0.5):
    (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 in float64, as openpi's numpy transforms compute it (the pi0.5 prompt
    discretizes these values).

    Attributes:
        stats: {"mean", "std"[, "q01", "q99"]}: float64[n], the state's norm stats.
        normalization: "zscore" or "quantile".

    Raises:
        ConfigError at construction when quantile stats lack q01/q99; ObservationError when the state is wider
        than the stats or a finite state overflows float32 once normalized.
    """

    stats: Mapping[str, np.ndarray]
    normalization: str = "zscore"

    def __post_init__(self) -> None:
        check_normalization(self.normalization, {"state": self.stats})

    def __call__(self, data: Data) -> Data:
        state = data["state"]
        d, n = state.shape[-1], self.stats["mean"].shape[0]
        if d > n:
            raise ObservationError(f"obs[{STATE_KEY!r}] has {d} dims, but the norm stats cover {n}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as an error
            if self.normalization == "quantile":
                out = quantile_normalize(state, self.stats, d)
            else:
                out = zscore(state, self.stats, d)
            finite = np.isfinite(out.astype(np.float32)).all()
        if not finite:
            raise ObservationError(f"obs[{STATE_KEY!r}] overflows float32 after normalization "
                                   f"(|values| up to {np.abs(state).max():.3g}); expected robot-scale numbers")
        data["state"] = out.astype(np.float64)
        return data


@dataclasses.dataclass(frozen=True)
class TokenizePrompt:
    """"prompt" -> "tokenized_prompt" int32[T] and "tokenized_prompt_mask" bool[T] (openpi's TokenizePrompt).

    pi0: BOS + encode(cleaned prompt) + encode("\\n"), padded with 0 to the model's T prompt slots. With
    `discrete_state_input` (pi0.5 base): BOS + encode("Task: {cleaned}, State: {bins};\\nAction: "), the bins
    taken from the normalized, not yet padded "state". The prompt text stays in "prompt" (the bundle shows it).

    Attributes:
        tokenizer: the SentencePiece model (PaliGemma's for a real checkpoint).
        max_len: T, the model's prompt slots (pi0: 48, pi0.5: 200).
        discrete_state_input: pi0.5's prompt with the discretized state in its text.
    """

    tokenizer: PromptTokenizer
    max_len: int
    discrete_state_input: bool = False

    def __call__(self, data: Data) -> Data:
        if data.get(PROMPT_KEY) is None:
            raise ObservationError(f"observation has no {PROMPT_KEY!r} and the policy has no default_prompt")
        state = data["state"] if self.discrete_state_input else None
        ids, mask = self.tokenizer.tokenize(data[PROMPT_KEY], self.max_len, state=state)
        data["tokenized_prompt"], data["tokenized_prompt_mask"] = ids, mask
        return data


@dataclasses.dataclass(frozen=True)
class PadState:
    """"state" float[d] -> float[action_dim], zeros after the robot's d dims (openpi's PadStatesAndActions).

    Raises:
        ObservationError when the state is wider than action_dim.
    """

    action_dim: int

    def __call__(self, data: Data) -> Data:
        state = data["state"]
        d = state.shape[-1]
        if d > self.action_dim:
            raise ObservationError(f"obs[{STATE_KEY!r}] has {d} dims, but the model takes at most {self.action_dim}")
        out = np.zeros(state.shape[:-1] + (self.action_dim,), dtype=state.dtype)
        out[..., :d] = state
        data["state"] = out
        return data


# -- output transforms --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnnormalizeActions:
    """"actions" float[A, D] (and "state" float[D] when present) back to robot units, float64 (openpi's
    Unnormalize): z-score x * (std + 1e-6) + mean with stats padded by mean 0 / std 1 to D; quantile
    (x + 1) / 2 * (q99 - q01 + 1e-6) + q01 on the dims the stats cover, the rest untouched.

    Attributes:
        stats: {"state": {...}, "actions": {...}} as in openpi's norm_stats.json (float64[n] arrays).
        normalization: "zscore" or "quantile".
    """

    stats: NormStats
    normalization: str = "zscore"

    def __post_init__(self) -> None:
        check_normalization(self.normalization, self.stats)

    def __call__(self, data: Data) -> Data:
        undo = quantile_unnormalize if self.normalization == "quantile" else unzscore
        for key in ("actions", "state"):
            if key in data:
                data[key] = undo(np.asarray(data[key], dtype=np.float64), self.stats[key])
        return data


@dataclasses.dataclass(frozen=True)
class AbsoluteActions:
    """Adds the state to the first `dims` action dims (openpi's AbsoluteActions): pi0_libero's delta quirk.

    In: "actions" float64[A, D] and "state" float64[D], both unnormalized (the state is the model-input state,
    normalize -> float32 -> unnormalize, as openpi adds it, not the raw one).
    """

    dims: int = 6

    def __call__(self, data: Data) -> Data:
        data["actions"][..., : self.dims] += data["state"][..., : self.dims]
        return data


@dataclasses.dataclass(frozen=True)
class SliceActions:
    """"actions" float[A, D] -> float32[A, action_dims], the robot's dims (openpi's LiberoOutputs: 7)."""

    action_dims: int

    def __call__(self, data: Data) -> Data:
        data["actions"] = np.asarray(data["actions"])[..., : self.action_dims].astype(np.float32)
        return data


# -- the LeRobot request ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeRobotInputs:
    """LIBERO client keys -> a LeRobot observation (unbatched, numpy): the two images to the checkpoint's first two
    `image_features` as float32[3, h, w] in [0, 1], "observation.state" float32[d], "task" the prompt. LeRobot's
    own processor pipelines then normalize and tokenize.

    Raises:
        ObservationError naming the missing key or the wrong image shape.
    """

    image_features: tuple[str, ...]

    def __call__(self, data: Data) -> Data:
        missing = [k for k in LIBERO_KEYS if k not in data]
        if missing:
            raise ObservationError(f"request lacks {missing}; expected openpi's LIBERO keys {list(LIBERO_KEYS)}")
        out: Data = {}
        for feature, key in zip(self.image_features, LIBERO_IMAGE_KEYS):
            image = np.asarray(data[key])
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ObservationError(f"{key} must be an image [h, w, 3], got shape {list(image.shape)}")
            scaled = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
            out[feature] = np.ascontiguousarray(scaled.transpose(2, 0, 1))
        out["observation.state"] = np.asarray(data[STATE_KEY], dtype=np.float32)
        out["task"] = str(data[PROMPT_KEY])
        return out


# -- what the model sees ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PolicyInputs:
    """One observation after the input chain, before batching.

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

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "PolicyInputs":
        """The end of a LIBERO input chain as named fields (the state cast to the model's float32)."""
        return cls(images=data["image"], image_masks=data["image_mask"],
                   state=np.asarray(data["state"]).astype(np.float32), token_ids=data["tokenized_prompt"],
                   token_mask=data["tokenized_prompt_mask"], raw_state=data["raw_state"], prompt=data[PROMPT_KEY])

    def bundle(self, attention: np.ndarray, *, tokenizer: PromptTokenizer, camera_names: Sequence[str],
               diffusion_times: np.ndarray, actions: np.ndarray, num_state_tokens: int, num_action_tokens: int,
               inference_step: int | None = None, patch_grid: tuple[int, int] = (16, 16), heads: str = "all",
               queries: str = "suffix", keys: str = "all") -> CaptureBundle:
        """One call's attention packaged with the images, tokens and actions the model saw (B = 1).

        Args:
            attention: float16/float32[D, L, 1, K, G, Q, S] post-softmax probabilities from any backend.
            tokenizer: gives the display pieces of the prompt tokens.
            camera_names: the model's camera slots in order.
            diffusion_times: float32[D], t of each denoising step (1 = noise).
            actions: float32[A, action_dims], what the policy returns.
            patch_grid: (rows, cols) of image tokens per camera (SigLIP /14 on 224 x 224: 16 x 16).
            heads / queries / keys: the capture's reductions ("max"/"all", "actions"/"suffix", "prefix"/"all").
        """
        cams = list(camera_names)
        return CaptureBundle(
            attention=attention,
            camera_names=cams,
            images=np.stack([self.images[c] for c in cams])[None],  # [1, C, 224, 224, 3]
            image_masks=np.asarray([[self.image_masks[c] for c in cams]], dtype=bool),
            token_ids=self.token_ids[None].astype(np.int32),
            token_pieces=tokenizer.pieces(self.token_ids, self.token_mask)[None],
            token_mask=self.token_mask[None],
            num_state_tokens=num_state_tokens,
            num_action_tokens=num_action_tokens,
            diffusion_times=np.asarray(diffusion_times, dtype=np.float32),
            patch_grid=patch_grid,
            prompt=np.asarray([self.prompt], dtype=str),
            inference_step=inference_step,
            actions=np.asarray(actions)[None],
            attention_kind="probs",
            attention_heads=heads,
            attention_queries=queries,
            attention_keys=keys,
        )


# -- checks shared by the transforms ------------------------------------------------------------------------------


def check_normalization(normalization: str, stats: NormStats) -> None:
    """Raises ConfigError for an unknown normalization, or quantile stats without q01/q99."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be 'zscore' or 'quantile', got {normalization!r}")
    if normalization == "quantile":
        for key, entry in stats.items():
            if "q01" not in entry or "q99" not in entry:
                raise ConfigError(f"quantile normalization (pi0.5) needs q01 and q99 in the norm stats' {key!r}, "
                                  f"got {sorted(entry)}")


def prompt_of(obs: Mapping[str, Any]) -> str:
    """obs["prompt"] as str (bytes as UTF-8, a 0-d numpy string); raises ObservationError otherwise."""
    prompt = obs.get(PROMPT_KEY)
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


def check_state(state: Any) -> np.ndarray:
    """obs["observation/state"] as float64[d]: a finite, non-empty 1-d numeric vector, else ObservationError."""
    try:
        s = np.asarray(state)
    except (TypeError, ValueError):
        raise ObservationError(f"obs[{STATE_KEY!r}] must be a 1-d float vector (LIBERO: 8 floats)") from None
    if s.dtype.kind not in "fiu":
        raise ObservationError(f"obs[{STATE_KEY!r}] must be a float array, got dtype {s.dtype}")
    if s.ndim != 1 or s.shape[0] == 0:
        raise ObservationError(
            f"obs[{STATE_KEY!r}] must be a 1-d vector (LIBERO: 8 floats), got shape {list(s.shape)}")
    if not np.isfinite(s).all():
        raise ObservationError(f"obs[{STATE_KEY!r}] contains NaN or inf: {s.tolist()}")
    return s.astype(np.float64)


# -- pi0-FAST (openpi's PI0_FAST model transforms around the LIBERO ones) -----------------------------------------


@dataclasses.dataclass(frozen=True)
class LiberoFastInputs:
    """LiberoInputs for pi0-FAST: the same cameras, state and prompt, but EVERY camera slot unmasked (openpi's
    LiberoInputs for PI0_FAST: the absent right wrist is a black image with mask True; "We don't mask out padding
    images for FAST models")."""

    image_keys: tuple[str, ...]

    def __call__(self, data: Data) -> Data:
        out = LiberoInputs(self.image_keys)(data)
        out["image_mask"] = {cam: True for cam in out["image_mask"]}
        return out


def fast_prompt_text(prompt: str, state: np.ndarray) -> str:
    """openpi's FASTTokenizer prefix: "Task: {prompt lower-cased, stripped, '_' -> ' '}, State: {bins};\\n", the bins
    those of the normalized state (256 over [-1, 1], pi0viz.policy.tokenizer.discretize_state)."""
    from pi0viz.policy.tokenizer import discretize_state

    cleaned = prompt.lower().strip().replace("_", " ")
    bins = " ".join(str(int(b)) for b in discretize_state(state))
    return f"Task: {cleaned}, State: {bins};\n"


@dataclasses.dataclass(frozen=True)
class TokenizeFastPrompt:
    """"prompt" + normalized "state" -> "tokenized_prompt" int32[T], "tokenized_prompt_mask" bool[T] and
    "token_ar_mask" int32[T] (openpi's TokenizeFASTInputs at inference): BOS + encode(fast_prompt_text(...)), padded
    with 0; the ar mask is all 0 (no action postfix at inference). A prompt longer than T is cut (logged).

    Attributes:
        tokenizer: the prompt tokenizer (PaliGemma's for a real checkpoint).
        max_len: T, the model's prompt slots (pi0_fast_libero: 180).
    """

    tokenizer: PromptTokenizer
    max_len: int

    def __call__(self, data: Data) -> Data:
        import logging

        if data.get(PROMPT_KEY) is None:
            raise ObservationError(f"observation has no {PROMPT_KEY!r} and the policy has no default_prompt")
        tokens = [self.tokenizer.bos_id, *self.tokenizer.encode_text(fast_prompt_text(data[PROMPT_KEY], data["state"]))]
        if len(tokens) > self.max_len:
            logging.getLogger(__name__).warning("prompt is %d tokens, more than max_len %d: truncated", len(tokens),
                                                self.max_len)
            tokens = tokens[: self.max_len]
        ids = np.zeros((self.max_len,), np.int32)
        ids[: len(tokens)] = tokens
        data["tokenized_prompt"] = ids
        data["tokenized_prompt_mask"] = np.arange(self.max_len) < len(tokens)
        data["token_ar_mask"] = np.zeros((self.max_len,), np.int32)
        return data


@dataclasses.dataclass(frozen=True)
class ExtractFastActions:
    """"actions" int[J] generated PaliGemma ids -> float64[H, D] normalized actions (openpi's ExtractFASTActions:
    pi0viz.policy.fast_tokenizer.extract_actions), and "fast_decoding" = its DecodeResult (why the actions are zeros
    when the ids do not decode, as openpi returns zeros then).

    Attributes:
        tokenizer: the prompt tokenizer (its text and vocabulary size place the FAST tokens).
        fast: the FAST tokenizer (a pi0viz.policy.fast_tokenizer.FastActionTokenizer).
        action_horizon, action_dim: H, D of a chunk (pi0_fast_libero: 10, 7).
    """

    tokenizer: PromptTokenizer
    fast: Any
    action_horizon: int
    action_dim: int

    def __call__(self, data: Data) -> Data:
        from pi0viz.policy.fast_tokenizer import extract_actions

        result = extract_actions(data["actions"], self.tokenizer, self.fast, self.action_horizon, self.action_dim)
        data["actions"] = result.actions
        data["fast_decoding"] = result
        return data
