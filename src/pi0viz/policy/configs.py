"""Named policy configs: one table, the facts of openpi's training configs that inference depends on, and the
transform chains each config runs around its model.

    name          model                               inputs                          outputs
    pi0_libero    pi0  (gemma_2b + gemma_300m)        libero, zscore, tokenize, pad   unzscore, absolute(6), slice(7)
    pi05_libero   pi0.5, 10 actions, 200 slots        libero, quantile, tokenize, pad unquantile, slice(7)
    pi0_base      pi0                                 libero, zscore, tokenize, pad   unzscore, slice(7)
    pi05_base     pi0.5, 200 slots                    libero, quantile, tokenize with unquantile, slice(7)
                                                      the discrete state, pad
    reach_tiny    pi0viz's trained reach-tiny         libero (one camera), zscore,    unzscore, slice(7)
                  (pi0viz.policy.reach_model)         tokenize, pad

    pi0_fast_libero  pi0-FAST: FastPolicyConfig (FAST_CONFIGS, get_fast_config; the table at its definition)

(every input chain also resizes the images with pad to 224 x 224 and injects the default prompt.)
`make_transforms(model, tokenizer, norm_stats, pipeline=NAME)` builds the two chains of a name from the small
transforms of `pi0viz.policy.transforms`; a `Policy` takes a model and that result.

Every openpi config has a tiny variant (`tiny_model_config`): the same pipeline and token layout around openpi's
tiny model shape (dummy Gemma experts, SigLIP mu/14, float32), for offline demos and tests with random weights.
Cameras, image masks and the output slice (7 dims) are LIBERO's for every config (pi0viz's policy wing speaks
LIBERO's observation keys); the base configs name no norm-stats asset, so their checkpoint's asset id must be
given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pi0viz.errors import ConfigError
from pi0viz.model.config import Pi0Config, Pi0FastConfig
from pi0viz.policy.norm_stats import NormStats, check_norm_stats
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.policy.transforms import (
    AbsoluteActions,
    ExtractFastActions,
    InjectDefaultPrompt,
    LiberoFastInputs,
    LiberoInputs,
    NormalizeState,
    PadState,
    PolicyTransforms,
    ResizeImagesWithPad,
    SliceActions,
    TokenizeFastPrompt,
    TokenizePrompt,
    UnnormalizeActions,
    compose,
)

LIBERO_ASSET_ID = "physical-intelligence/libero"
DELTA_DIMS = 6  # pi0_libero's delta quirk covers the end effector's position and axis-angle


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The transforms of one named config, as settings of the LIBERO chains (see the module table).

    Attributes:
        normalization: "zscore" (pi0) or "quantile" (q01/q99; openpi's choice for every non-pi0 model).
        delta_actions: pi0_libero's extra DeltaActions quirk (AbsoluteActions: actions[:, :6] += state[:6]).
        discrete_state_input: pi0.5 prompt "Task: ..., State: <bins>;\\nAction: " (the state as text).
        action_dims: dims returned to the robot (LIBERO: 7).
    """

    normalization: str
    delta_actions: bool = False
    discrete_state_input: bool = False
    action_dims: int = 7


PIPELINES: dict[str, Pipeline] = {
    "pi0_libero": Pipeline("zscore", delta_actions=True),
    "pi05_libero": Pipeline("quantile"),
    "pi0_base": Pipeline("zscore"),
    "pi05_base": Pipeline("quantile", discrete_state_input=True),
    "reach_tiny": Pipeline("zscore"),
}


def make_transforms(model: Pi0Config, tokenizer: PromptTokenizer, norm_stats: NormStats, *,
                    pipeline: str | Pipeline = "pi0_libero", action_dims: int | None = None,
                    default_prompt: str | None = None) -> PolicyTransforms:
    """The input and output chains of a named pipeline around `model` (its cameras, T prompt slots, action_dim).

    Args:
        model: the model config: image_keys, max_token_len (T), action_dim (pi0: 32).
        tokenizer: the prompt tokenizer.
        norm_stats: {"state": {"mean", "std"[, "q01", "q99"]}, "actions": {...}}: 1..action_dim numbers each.
        pipeline: a name of PIPELINES or a Pipeline.
        action_dims: overrides the pipeline's robot action width (1..action_dim).
        default_prompt: used when a request has no "prompt".
    Raises:
        ConfigError for an unknown pipeline or impossible widths; CheckpointError for malformed stats.
    """
    if isinstance(pipeline, str):
        if pipeline not in PIPELINES:
            raise ConfigError(f"unknown policy pipeline {pipeline!r}; expected one of {sorted(PIPELINES)}")
        pipeline = PIPELINES[pipeline]
    dims = pipeline.action_dims if action_dims is None else action_dims
    if not 1 <= dims <= model.action_dim:
        raise ConfigError(f"action_dims must be in [1, {model.action_dim}], got {dims}")
    if pipeline.delta_actions and dims < DELTA_DIMS:
        raise ConfigError(f"delta_actions adds the state to action dims 0-5, so action_dims must be >= 6, got {dims}")
    stats = check_norm_stats(norm_stats, model.action_dim)
    inputs = compose(
        LiberoInputs(tuple(model.image_keys)),
        NormalizeState(stats["state"], pipeline.normalization),
        InjectDefaultPrompt(default_prompt),
        ResizeImagesWithPad(),
        TokenizePrompt(tokenizer, model.max_token_len, pipeline.discrete_state_input),
        PadState(model.action_dim),
    )
    outputs = compose(
        UnnormalizeActions(stats, pipeline.normalization),
        AbsoluteActions(DELTA_DIMS) if pipeline.delta_actions else None,
        SliceActions(dims),
    )
    return PolicyTransforms(inputs, outputs)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """One named policy: its model shape and the transforms openpi runs around it.

    Attributes:
        name: the config's name (openpi's training config name), also the name of its PIPELINES entry.
        model: the full-size model config.
        asset_id: norm stats under <checkpoint>/assets/<asset_id>/; None = must be given.
    """

    name: str
    model: Pi0Config
    asset_id: str | None

    @property
    def pipeline(self) -> Pipeline:
        """The config's transform settings (PIPELINES[name])."""
        return PIPELINES[self.name]

    @property
    def normalization(self) -> str:
        return self.pipeline.normalization

    @property
    def delta_actions(self) -> bool:
        return self.pipeline.delta_actions

    @property
    def discrete_state_input(self) -> bool:
        return self.pipeline.discrete_state_input

    @property
    def action_dims(self) -> int:
        return self.pipeline.action_dims

    @property
    def family(self) -> str:
        """'pi0.5' or 'pi0'."""
        return "pi0.5" if self.model.pi05 else "pi0"

    def tiny_model_config(self, vocab_size: int) -> Pi0Config:
        """openpi's tiny model shape with this config's token layout (horizon, prompt slots, pi0/pi0.5)."""
        return Pi0Config.tiny(pi05=self.model.pi05, action_horizon=self.model.action_horizon,
                              max_token_len=self.model.max_token_len, vocab_size=vocab_size)

    def transforms(self, model: Pi0Config, tokenizer: PromptTokenizer, norm_stats: NormStats,
                   **kwargs: Any) -> PolicyTransforms:
        """This config's chains around `model` (make_transforms; kwargs: action_dims, default_prompt)."""
        return make_transforms(model, tokenizer, norm_stats, pipeline=self.pipeline, **kwargs)


CONFIGS: dict[str, PolicyConfig] = {
    c.name: c
    for c in (
        PolicyConfig("pi0_libero", Pi0Config.pi0(), asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi05_libero", Pi0Config.pi0(pi05=True, action_horizon=10), asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi0_base", Pi0Config.pi0(), asset_id=None),
        PolicyConfig("pi05_base", Pi0Config.pi0(pi05=True), asset_id=None),
    )
}
DEFAULT_CONFIG = "pi0_libero"


def get_config(name: str) -> PolicyConfig:
    """The named config; raises ConfigError listing the known names."""
    if name not in CONFIGS:
        if name in FAST_CONFIGS:  # defined below; a pi0-FAST name reaching a pi0 / pi0.5 path
            raise ConfigError(f"{name} is a pi0-FAST config (pi0viz.policy.fast_policy.FastPolicy: pi0viz serve, the "
                              f"LIBERO example); this takes a pi0 / pi0.5 config: one of {sorted(CONFIGS)}")
        raise ConfigError(f"unknown policy config {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]


# -- pi0-FAST -------------------------------------------------------------------------------------------------
#
#   pi0_fast_libero  pi0-FAST (gemma_2b, one PaliGemma),   libero (no camera masked),       FAST decode, unquantile,
#                    10 x 7 actions, 180 prompt slots     quantile, FAST prompt with the   absolute(6), slice(7)
#                                                         discrete state (no padding)
#
# openpi's ModelTransformFactory for PI0_FAST: InjectDefaultPrompt, ResizeImages, TokenizeFASTInputs (no
# PadStatesAndActions) and ExtractFASTActions; LeRobotLiberoDataConfig adds LiberoInputs (right wrist unmasked for
# FAST), quantile Normalize, and pi0_fast_libero's extra_delta_transform (AbsoluteActions on dims 0-5), LiberoOutputs.

TINY_FAST_PROMPT_SLOTS = 96
FAST_STATS_WIDTH = 32  # norm stats of a FAST checkpoint cover its state (LIBERO: 8) and actions (7): at most 32


@dataclasses.dataclass(frozen=True)
class FastPolicyConfig:
    """One named pi0-FAST policy: its model shape and openpi's transforms around it.

    Attributes:
        name: openpi's training config name.
        model: the full-size Pi0FastConfig (action_horizon H and action_dim D: the FAST chunk shape).
        asset_id: norm stats under <checkpoint>/assets/<asset_id>/.
        delta_actions: the extra DeltaActions quirk of pi0_fast_libero (AbsoluteActions(6) on the way out).
        action_dims: dims returned to the robot (LIBERO: 7).
    """

    name: str
    model: Pi0FastConfig
    asset_id: str | None
    delta_actions: bool = False
    action_dims: int = 7
    normalization: str = "quantile"

    @property
    def family(self) -> str:
        return "pi0-FAST"

    def tiny_model_config(self, vocab_size: int) -> Pi0FastConfig:
        """openpi's tiny pi0-FAST shape (dummy Gemma, SigLIP mu/14, float32, at most 24 decode steps) with this
        config's chunk shape, 96 prompt slots (a long LIBERO task and its 8 state bins fit with the bundled tokenizer)
        and the given vocabulary (the prompt tokenizer's)."""
        return Pi0FastConfig.tiny(action_dim=self.model.action_dim, action_horizon=self.model.action_horizon,
                                  max_token_len=TINY_FAST_PROMPT_SLOTS, vocab_size=vocab_size)

    def transforms(self, model: Pi0FastConfig, tokenizer: PromptTokenizer, fast_tokenizer: Any,
                   norm_stats: NormStats, *, action_dims: int | None = None,
                   default_prompt: str | None = None) -> PolicyTransforms:
        """The input and output chains around `model` (its cameras, T prompt slots, H x D chunk).

        Raises:
            ConfigError for impossible widths or a prompt tokenizer whose vocabulary is not the model's (FAST tokens
            sit at the end of it); CheckpointError for malformed stats.
        """
        if tokenizer.vocab_size != model.vocab_size:
            raise ConfigError(f"pi0-FAST maps its action tokens to the last ids of the prompt tokenizer's vocabulary: "
                              f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} pieces, the model "
                              f"{model.vocab_size}; pass PaliGemma's paligemma_tokenizer.model (--tokenizer)")
        dims = self.action_dims if action_dims is None else action_dims
        if not 1 <= dims <= model.action_dim:
            raise ConfigError(f"action_dims must be in [1, {model.action_dim}], got {dims}")
        if self.delta_actions and dims < DELTA_DIMS:
            raise ConfigError(f"delta_actions adds the state to action dims 0-5, so action_dims must be >= 6, got "
                              f"{dims}")
        stats = check_norm_stats(norm_stats, max(FAST_STATS_WIDTH, model.action_dim))
        inputs = compose(
            LiberoFastInputs(tuple(model.image_keys)),
            NormalizeState(stats["state"], self.normalization),
            InjectDefaultPrompt(default_prompt),
            ResizeImagesWithPad(),
            TokenizeFastPrompt(tokenizer, model.max_token_len),
        )
        outputs = compose(
            ExtractFastActions(tokenizer, fast_tokenizer, model.action_horizon, model.action_dim),
            UnnormalizeActions(stats, self.normalization),
            AbsoluteActions(DELTA_DIMS) if self.delta_actions else None,
            SliceActions(dims),
        )
        return PolicyTransforms(inputs, outputs)


FAST_CONFIGS: dict[str, FastPolicyConfig] = {
    c.name: c
    for c in (
        FastPolicyConfig("pi0_fast_libero", Pi0FastConfig.pi0_fast_libero(), asset_id=LIBERO_ASSET_ID,
                         delta_actions=True),
    )
}
DEFAULT_FAST_CONFIG = "pi0_fast_libero"


def get_fast_config(name: str) -> FastPolicyConfig:
    """The named pi0-FAST config; raises ConfigError listing the known names."""
    if name not in FAST_CONFIGS:
        raise ConfigError(f"unknown pi0-FAST policy config {name!r}; expected one of {sorted(FAST_CONFIGS)}")
    return FAST_CONFIGS[name]
