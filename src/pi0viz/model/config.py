"""Model configuration: pi0 / pi0.5 and the variant tables of its two building blocks (Gemma, SigLIP).

Variants are data. The Gemma table follows openpi's `gemma.get_config`; the SigLIP table follows big_vision's
`decode_variant` ("So400m/14" = width 1152, depth 27, mlp 4304, 16 heads, 14x14 patches).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

PALIGEMMA_VOCAB_SIZE = 257_152
IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # prefix token order
IMAGE_RESOLUTION = (224, 224)


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """One Gemma expert. All pi0 experts share depth, num_heads, num_kv_heads and head_dim."""

    width: int  # W, model width
    depth: int  # L, number of layers
    mlp_dim: int  # F, hidden width of the gated MLP
    num_heads: int  # N = K * G query heads
    num_kv_heads: int  # K, key/value heads (1 for every pi0 variant: multi-query attention)
    head_dim: int  # E, head dimension


GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "dummy": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    # pi0viz's trained demo model (pi0viz.training): the dummy shape with 2 query heads of 32 instead of 8 of 16;
    # with 8 heads of 16 the reach task learned nothing in a few hundred steps.
    "dummy_2x32": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=32),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),  # 311M
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
}


def gemma_config(variant: str) -> GemmaConfig:
    """Gemma variant by openpi name; `*_lora` names give the base shapes (LoRA weights are merged on load)."""
    base = variant.removesuffix("_lora")
    if base not in GEMMA_VARIANTS:
        known = sorted(GEMMA_VARIANTS) + [f"{v}_lora" for v in sorted(GEMMA_VARIANTS) if v != "dummy"]
        raise ValueError(f"unknown Gemma variant {variant!r}; expected one of {known}")
    return GEMMA_VARIANTS[base]


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """A SigLIP ViT encoder without pooling; its `head` projects every patch token to the LLM width."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: tuple[int, int]


# big_vision decode_variant: name -> (width, depth, mlp_dim, num_heads).
SIGLIP_VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}


def siglip_config(variant: str) -> SiglipConfig:
    """Decode a "Name/patch" string such as "So400m/14" (patch defaults to 16 as in big_vision)."""
    name, _, patch = variant.partition("/")
    if name not in SIGLIP_VARIANTS:
        raise ValueError(
            f"unknown SigLIP variant {variant!r}; expected '<name>/<patch>' with name in {list(SIGLIP_VARIANTS)}"
        )
    width, depth, mlp_dim, num_heads = SIGLIP_VARIANTS[name]
    p = int(patch) if patch else 16
    return SiglipConfig(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads, patch_size=(p, p))


class _PaliGemmaPrefix:
    """What pi0, pi0.5 and pi0-FAST share: PaliGemma's Gemma and SigLIP variants and the prefix they read.

    Needs the fields paligemma_variant, siglip_variant, dtype, image_keys and max_token_len.
    """

    @property
    def llm(self) -> GemmaConfig:
        return gemma_config(self.paligemma_variant)

    @property
    def siglip(self) -> SiglipConfig:
        return siglip_config(self.siglip_variant)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def num_image_tokens(self) -> int:
        """Tokens per camera (256 for 224 x 224 images and 14 x 14 patches)."""
        ph, pw = self.siglip.patch_size
        return (IMAGE_RESOLUTION[0] // ph) * (IMAGE_RESOLUTION[1] // pw)

    @property
    def prefix_len(self) -> int:
        """P = C cameras x image tokens + T prompt slots (pi0 LIBERO 816, pi0.5 968, pi0_fast_libero 948)."""
        return len(self.image_keys) * self.num_image_tokens + self.max_token_len


@dataclasses.dataclass(frozen=True)
class Pi0Config(_PaliGemmaPrefix):
    """pi0 or pi0.5 (`pi05=True`) as openpi's `Pi0Config`, plus the SigLIP variant openpi hard-codes ("So400m/14").

    pi0.5 differs in the action expert only: no state token (the suffix is the action tokens alone), the flow
    time enters through adaRMS (a time MLP, then per-norm scale/shift/gate and gated residuals), and the prompt
    has 200 slots by default. Frozen and hashable: it is a static argument of the jitted sampler.
    """

    paligemma_variant: str = "gemma_2b"  # expert 0: the PaliGemma LLM (prefix tokens)
    action_expert_variant: str = "gemma_300m"  # expert 1: the action expert (state + action tokens)
    siglip_variant: str = "So400m/14"
    action_dim: int = 32  # padded action/state width
    action_horizon: int = 50  # A, action tokens per chunk
    max_token_len: int | None = None  # T, prompt slots; None = openpi's default (200 for pi0.5, 48 for pi0)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # parameter + activation dtype, as openpi's inference
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    pi05: bool = False
    image_keys: tuple[str, ...] = IMAGE_KEYS

    def __post_init__(self) -> None:
        if self.max_token_len is None:  # as openpi's Pi0Config.__post_init__
            object.__setattr__(self, "max_token_len", 200 if self.pi05 else 48)
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}")
        llm, expert = self.llm, self.expert  # validates the variant names
        siglip_config(self.siglip_variant)
        shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
        bad = [f for f in shared if getattr(llm, f) != getattr(expert, f)]
        if bad:
            raise ValueError(f"the two Gemma experts must share {shared}; {self.paligemma_variant} and "
                             f"{self.action_expert_variant} differ in {bad}")

    @property
    def expert(self) -> GemmaConfig:
        return gemma_config(self.action_expert_variant)

    @property
    def num_state_tokens(self) -> int:
        """1 for pi0 (suffix query 0 is the state token), 0 for pi0.5 (no state token)."""
        return 0 if self.pi05 else 1

    @property
    def suffix_len(self) -> int:
        """Q = state tokens + A action tokens: the suffix (query) tokens (pi0: 51; pi05_libero: 10)."""
        return self.num_state_tokens + self.action_horizon

    @classmethod
    def pi0(cls, **overrides) -> "Pi0Config":
        """Full-size pi0 (pi0_base / pi0_libero): gemma_2b + gemma_300m + So400m/14, bfloat16.

        Full-size pi0.5: `pi0(pi05=True)` (pi05_base, horizon 50) or `pi0(pi05=True, action_horizon=10)`
        (pi05_libero).
        """
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "Pi0Config":
        """The openpi tiny references (dummy + dummy Gemma, SigLIP mu/14, float32): tests/data/openpi_pi0_tiny,
        and with `pi05=True, action_horizon=10, max_token_len=200` tests/data/openpi_pi05_tiny."""
        kw = dict(paligemma_variant="dummy", action_expert_variant="dummy", siglip_variant="mu/14", dtype="float32")
        kw.update(overrides)
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class Pi0FastConfig(_PaliGemmaPrefix):
    """pi0-FAST as openpi's `Pi0FASTConfig`: one PaliGemma (SigLIP + Gemma) that prefills the prefix and then
    generates FAST action tokens one at a time (no action expert, no flow matching).

    The defaults are openpi's `Pi0FASTConfig` defaults; `pi0_fast_libero()` and `tiny()` give the two shapes
    pi0viz checks. Frozen and hashable: it is a static argument of the jitted decoder.
    """

    paligemma_variant: str = "gemma_2b"
    siglip_variant: str = "So400m/14"  # openpi hard-codes it
    action_dim: int = 32  # decoded outside the model (FAST tokenizer); kept for the policy side
    action_horizon: int = 32
    max_token_len: int = 250  # T, prompt slots (task text + discretized state; + FAST tokens in training)
    max_decoding_steps: int = 256  # J, openpi's default (its Policy passes none)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    # Camera order = prefix order. openpi embeds `obs.images` in dict order, which jax sorts alphabetically.
    image_keys: tuple[str, ...] = IMAGE_KEYS
    # Position of decode step j is prefill_len + j + offset. openpi at 15a9616 (the recorded reference) uses 1:
    # position prefill_len is never used; later openpi uses 0 (contiguous with the prompt, as in training).
    decode_position_offset: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}")
        if self.max_decoding_steps < 1:
            raise ValueError(f"max_decoding_steps must be >= 1, got {self.max_decoding_steps}")
        gemma_config(self.paligemma_variant)  # validates the variant names
        siglip_config(self.siglip_variant)

    @property
    def cache_len(self) -> int:
        """S = P + J kv-cache slots: the aligned prefix, then one slot per decode step (tiny: 856; libero: 1204)."""
        return self.prefix_len + self.max_decoding_steps

    @classmethod
    def pi0_fast_libero(cls, **overrides) -> "Pi0FastConfig":
        """openpi's `pi0_fast_libero`: gemma_2b + So400m/14, 7 action dims, horizon 10, 180 prompt slots, bfloat16."""
        kw = dict(action_dim=7, action_horizon=10, max_token_len=180)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def tiny(cls, **overrides) -> "Pi0FastConfig":
        """The openpi tiny reference (tests/data/openpi_pi0fast_tiny): dummy Gemma, SigLIP mu/14, 64 prompt slots,
        at most 24 decode steps, float32."""
        kw = dict(paligemma_variant="dummy", siglip_variant="mu/14", action_horizon=10, max_token_len=64,
                  max_decoding_steps=24, dtype="float32")
        kw.update(overrides)
        return cls(**kw)
