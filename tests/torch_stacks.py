"""The PyTorch stacks the torch tests run on (a test matrix): which one this interpreter has, and its tiny models.

The same test modules (test_torch_capture.py, test_torch_policy.py, ...) run once per stack, each in its own venv
made by scripts/install.sh; scripts/test.sh names the stack it expects in PI0VIZ_TORCH_STACK:

    stack       venv               what                                                            install.sh name
    lerobot044  .venv              LeRobot 0.4.4, stock transformers 4.53.2 + pi0viz's compat      torch
                                   module, torch 2.13.0 CPU, Python 3.11
    lerobot06   .venv-lerobot06    LeRobot 0.6.1 (lerobot[pi]), transformers 5.5, torch 2.11,      lerobot06
                                   Python 3.12
    hf-native   .venv-hf           transformers' own PI0ForConditionalGeneration (5.23.0),         hf-pi0
                                   torch 2.13.0 CPU, Python 3.11 (no pi0.5 in transformers)

A torch test module starts with `stack = require_stack()` (and names the stacks it applies to, if not all): a
missing stack skips locally and fails under CI=true (tests/extras.py); a stack other than PI0VIZ_TORCH_STACK always
fails. A test that applies to some stacks only is marked `@only(LEROBOT044, ...)` (a plain skip, not a missing
extra).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from extras import missing, require

LEROBOT044, LEROBOT06, HF_NATIVE = "lerobot044", "lerobot06", "hf-native"
STACKS = (LEROBOT044, LEROBOT06, HF_NATIVE)
LEROBOT_STACKS = (LEROBOT044, LEROBOT06)
ENV = "PI0VIZ_TORCH_STACK"  # the stack scripts/test.sh expects in this interpreter
INSTALL = {LEROBOT044: "torch", LEROBOT06: "lerobot06", HF_NATIVE: "hf-pi0"}  # scripts/install.sh names
VENV = {LEROBOT044: ".venv", LEROBOT06: ".venv-lerobot06", HF_NATIVE: ".venv-hf"}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def detect() -> str | None:
    """The stack this interpreter has (one of STACKS), "unsupported: ..." for another LeRobot, or None."""
    lerobot = _version("lerobot")
    if lerobot is not None:
        if lerobot.startswith("0.4."):
            return LEROBOT044
        if lerobot.startswith("0.6."):
            return LEROBOT06
        return f"unsupported: lerobot {lerobot}"
    spec = importlib.util.find_spec("transformers")  # its pi0 folder, without importing it (that takes seconds)
    if spec is not None and any((Path(p) / "models" / "pi0").is_dir() for p in spec.submodule_search_locations or ()):
        return HF_NATIVE
    return None


STACK = detect()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch on one thread for a test module that imports this fixture (autouse there): on two cores shared by
    several jobs, torch's default of one spinning thread per core is ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def only(*stacks: str) -> pytest.MarkDecorator:
    """Mark a test that applies to `stacks` only (e.g. LeRobot 0.4.4's compat module, native PI0's processor)."""
    return pytest.mark.skipif(STACK not in stacks, reason=f"applies to {', '.join(stacks)}; this is {STACK}")


@dataclass(frozen=True)
class Stack:
    """One PyTorch stack: its name, the kinds it has ("pi0", "pi05"), and how to build / run its tiny models."""

    name: str
    kinds: tuple[str, ...]

    @property
    def lerobot(self) -> bool:
        return self.name in LEROBOT_STACKS

    def tiny(self, kind: str) -> Any:
        """The tiny model with openpi's tiny reference weights, eval mode: LeRobot's PI0Policy / PI05Policy, or
        transformers' PI0ForConditionalGeneration."""
        if self.lerobot:
            import torch_support as ts

            return ts.tiny_policy(kind)
        return native_tiny(kind)

    def sample(self, model: Any, kind: str, case: dict[str, np.ndarray]) -> np.ndarray:
        """One sampling call on the case's inputs and noise -> float32[B, H, 32]."""
        if self.lerobot:
            import torch_support as ts

            return ts.sample(model, kind, case)
        return native_sample(model, kind, case)

    def expert_attention(self, model: Any) -> list:
        """The action expert's self_attn modules the capture hooks, layer 0 first."""
        if self.lerobot:
            return list(m.self_attn for m in model.model.paligemma_with_expert.gemma_expert.model.layers)
        return native_expert_attention(model)

    def camera_names(self) -> dict[str, list[str]]:
        """`bundle()` keywords naming case_A's cameras: LeRobot's capture reads them from the policy's config;
        native PI0 has no names (the caller's, else camera_0..)."""
        import torch_support as ts

        return {} if self.lerobot else {"camera_names": list(ts.CAMERAS)}

    def capture_hooks(self, model: Any) -> int:
        """How many hooks capture_attention adds on the tiny model while it is active."""
        if self.lerobot:
            return 2 + len(self.expert_attention(model))  # vision tower, prompt embedding, each expert layer
        return native_capture_hooks


def require_stack(*stacks: str) -> Stack:
    """The stack of this interpreter, at a test module's top. `stacks`: the ones the module applies to (default
    all); on another one the module is skipped as not applicable. No stack: `missing` (fails under CI=true). A
    stack other than the one PI0VIZ_TORCH_STACK names: the module fails, CI or not (a wrong venv is no skip)."""
    expected = os.environ.get(ENV, "").strip()
    if expected and expected not in STACKS:
        pytest.fail(f"{ENV}={expected!r}: expected one of {', '.join(STACKS)}", pytrace=False)
    if expected and STACK != expected:
        pytest.fail(f"{ENV}={expected} but this interpreter has {STACK or 'no PyTorch pi0 stack'} "
                    f"(bash scripts/install.sh {INSTALL[expected]} makes {VENV[expected]})", pytrace=False)
    wanted = stacks or STACKS
    if STACK in STACKS and STACK not in wanted:  # before importing torch: a CUDA build takes seconds
        pytest.skip(f"applies to {', '.join(wanted)}; this is {STACK}", allow_module_level=True)
    require("torch", INSTALL.get(expected, "torch"))
    if STACK not in STACKS:
        missing("torch", f"a PyTorch pi0 stack (this interpreter has {STACK or 'none'}; LeRobot 0.4.4: install.sh "
                         f"torch, 0.6.1: install.sh lerobot06, transformers' PI0: install.sh hf-pi0)")
    if STACK == LEROBOT044:
        require("lerobot", "torch")
        # LeRobot 0.4.4's pi0 refuses to build on stock transformers: pi0viz's compat module supplies this
        require("transformers.models.siglip.check", "torch")
    elif STACK == LEROBOT06:
        require("lerobot.policies.pi0.modeling_pi0", "lerobot06")
    return Stack(STACK, ("pi0", "pi05") if STACK in LEROBOT_STACKS else ("pi0",))


# -- transformers' native PI0 (HFPI0) --
# Written by HFPI0. transformers' PI0ForConditionalGeneration at tiny size: PaliGemma with openpi's "dummy" Gemma
# (width 64, depth 4, mlp 128, 8 heads, 1 kv head, head dim 16) and the reference data's SigLIP ("mu/14": width 32,
# depth 1, mlp 128, 2 heads), the same dummy Gemma as the action expert (`dit`). Every module is transformers' own.

NATIVE_IMAGE_TOKEN = 257152  # PI0Config's default image_token_id (one past PaliGemma's vocabulary)


def native_config(image_token_id: int = NATIVE_IMAGE_TOKEN):
    """The tiny PI0Config (transformers' defaults for the rest: 50 actions, 32-d state / actions, 10 steps)."""
    from transformers import PI0Config

    gemma = {"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 128,
             "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 16}
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 128,
              "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 14, "image_size": 224,
              "vision_use_head": False}
    vlm = {"model_type": "paligemma", "text_config": {**gemma, "vocab_size": 257152}, "vision_config": siglip,
           "projection_dim": 64, "image_token_id": image_token_id}
    return PI0Config(vlm_config=vlm, dit_config=dict(gemma))


def native_tiny(kind: str = "pi0", **config_overrides):
    """transformers' PI0ForConditionalGeneration, tiny, with openpi's tiny pi0 weights (pi0viz's converter), eval
    mode; its attention implementation left as transformers sets it (SDPA)."""
    if kind != "pi0":
        raise ValueError(f"transformers has no {kind}; its PI0 is pi0 only")
    import torch_support as ts
    from transformers import PI0ForConditionalGeneration

    from pi0viz.torch_capture.convert_native import load_openpi_params_native

    model = PI0ForConditionalGeneration(native_config(**config_overrides))
    load_openpi_params_native(model, ts.reference_params(kind))
    return model.eval()


def native_inputs(case: dict[str, np.ndarray], *, absent: tuple[str, ...] = (),
                  image_token_id: int = NATIVE_IMAGE_TOKEN) -> dict:
    """An openpi case as `sample_actions` keywords in the processor's layout: pixel_values float[B, C, 3, 224, 224]
    in [-1, 1] for the case's C cameras, pixel_attention_mask bool[B, C] (False for `absent` cameras and those whose
    `image_mask/<camera>` is False: no tokens, as the processor gives a camera it has no image of), input_ids
    [B, C_present * 256 + T] (image tokens, then the case's prompt ids with its pads), attention mask, state, noise."""
    import torch

    cameras = [str(k) for k in case["image_keys"]]
    masks = {c: np.asarray(case[f"image_mask/{c}"], bool) for c in cameras}
    if any(m.any() and not m.all() for m in masks.values()):
        raise ValueError("a camera present in some samples only: the processor's layout needs one camera count")
    present = [c for c in cameras if c not in absent and masks[c].all()]
    pixels = torch.stack([torch.from_numpy(case[f"image/{c}"]).permute(0, 3, 1, 2) for c in cameras], dim=1)
    batch = pixels.shape[0]
    images = len(present) * 256
    return {
        "state": torch.from_numpy(case["state"]),
        "input_ids": torch.cat([torch.full((batch, images), image_token_id),
                                torch.from_numpy(case["tokenized_prompt"]).long()], dim=1),
        "pixel_values": pixels.contiguous(),
        "pixel_attention_mask": torch.tensor([[c in present for c in cameras]] * batch),
        "attention_mask": torch.cat([torch.ones(batch, images, dtype=torch.long),
                                     torch.from_numpy(case["tokenized_prompt_mask"]).long()], dim=1),
        "noise": torch.from_numpy(case["noise"]),
    }


def native_sample(model, kind: str, case: dict[str, np.ndarray], *, absent: tuple[str, ...] = ()) -> np.ndarray:
    """One `sample_actions` call on the case's inputs and noise -> float32[B, 50, 32]."""
    import torch

    with torch.no_grad():
        return model.sample_actions(**native_inputs(case, absent=absent)).numpy()


def native_expert_attention(model) -> list:
    """The action expert's self_attn modules (model.model.dit.layers[i].self_attn), layer 0 first."""
    return [layer.self_attn for layer in model.model.dit.layers]


# vision tower, prompt embedding, PI0Model (its pixel_attention_mask), each of the 4 expert layers
native_capture_hooks = 3 + 4

NATIVE_LIBERO_STATE, NATIVE_LIBERO_ACTIONS = 8, 7


def native_save_libero_checkpoint(folder, tokenizer_dir):
    """A native PI0 folder as a transformers user saves one: the tiny model (openpi's tiny weights) and its
    PI0Processor, LIBERO-shaped (8-d state, 7-d actions statistics), the tokenizer built from pi0viz's bundled
    sentencepiece model in `tokenizer_dir` (PaliGemma's lives on the Hub). Returns `folder`."""
    import shutil

    from transformers import GemmaTokenizer, PI0ImageProcessor, PI0Processor

    from pi0viz.policy.tokenizer import BUNDLED_MODEL

    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUNDLED_MODEL, tokenizer_dir / "tokenizer.model")  # GemmaTokenizer(vocab_file=) gives <unk> on 5.x
    tokenizer = GemmaTokenizer.from_pretrained(tokenizer_dir)
    processor = PI0Processor(image_processor=PI0ImageProcessor(), tokenizer=tokenizer,
                             state_mean=[0.1] * NATIVE_LIBERO_STATE, state_std=[2.0] * NATIVE_LIBERO_STATE,
                             actions_mean=[0.5] * NATIVE_LIBERO_ACTIONS, actions_std=[2.0] * NATIVE_LIBERO_ACTIONS)
    model = native_tiny("pi0", image_token_id=processor.image_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
