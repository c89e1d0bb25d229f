"""Tiny LeRobot pi0 / pi0.5 policies (real LeRobot classes) loaded with openpi's tiny reference checkpoints.

LeRobot's config accepts only the variant names gemma_300m / gemma_2b and hard-codes the So400m vision tower,
so the tiny variant is registered here, for the duration of the build: the module-level `get_gemma_config` returns
openpi's "dummy" Gemma (width 64, depth 4, mlp 128, 8 heads, 1 kv head, head dim 16), and the PaliGemma class
the module builds gets the tiny SigLIP of the reference data ("mu/14": width 32, depth 1, mlp 128, 2 heads) and a
projector to width 64. Every module is still LeRobot's / transformers' own. Works on LeRobot 0.4.4 and 0.6.1 (which
renamed the PaliGemma class its modules build: `PaliGemmaForConditionalGenerationWithPiGemma`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
# openpi pi05_libero: 10 action tokens, 200 prompt slots; pi0: 50 and 48.
SHAPES = {"pi0": {"chunk_size": 50, "tokenizer_max_length": 48},
          "pi05": {"chunk_size": 10, "tokenizer_max_length": 200}}
# the PaliGemma class LeRobot's modeling modules construct: 0.6.x's own subclass, 0.4.4's transformers class
PALIGEMMA_CLASSES = ("PaliGemmaForConditionalGenerationWithPiGemma", "PaliGemmaForConditionalGeneration")


def lerobot_module(kind: str):
    """LeRobot's modeling module for "pi0" or "pi05"."""
    if kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as module
    else:
        from lerobot.policies.pi05 import modeling_pi05 as module
    return module


@contextlib.contextmanager
def tiny_variant(kind: str) -> Iterator[None]:
    """Make LeRobot build the tiny model inside the block (restores the module afterwards)."""
    module = lerobot_module(kind)
    # LeRobot 0.6 builds its own subclass (pi_gemma.py); 0.4.4 transformers' class
    name = next(n for n in PALIGEMMA_CLASSES if getattr(module, n, None) is not None)
    real_config, real_paligemma = module.get_gemma_config, getattr(module, name)

    def dummy_gemma(variant: str):
        return module.GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)

    def tiny_paligemma(config):
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size = 32, 128
        vision.num_hidden_layers, vision.num_attention_heads = 1, 2
        vision.projection_dim = config.text_config.hidden_size  # LeRobot hard-codes 2048
        return real_paligemma(config=config)

    module.get_gemma_config = dummy_gemma
    setattr(module, name, tiny_paligemma)
    try:
        yield
    finally:
        module.get_gemma_config = real_config
        setattr(module, name, real_paligemma)


def tiny_config(kind: str, **overrides):
    """A LeRobot PI0Config / PI05Config for the three openpi camera slots, 32-d state and actions, on CPU."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    features = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (32,))
    shapes = SHAPES[kind]
    kwargs = dict(device="cpu", input_features=features,
                  output_features={"action": PolicyFeature(FeatureType.ACTION, (32,))},
                  n_action_steps=shapes["chunk_size"], **shapes)
    kwargs.update(overrides)
    if kind == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    return Config(**kwargs)


def tiny_policy(kind: str, **overrides):
    """LeRobot's PI0Policy / PI05Policy at tiny size with openpi's tiny reference weights, in eval mode."""
    with tiny_variant(kind):
        return tiny_policy_from_config(kind, tiny_config(kind, **overrides))


def reference_params(kind: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"openpi_{kind}_tiny" / "params_flat.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def reference_case(kind: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"openpi_{kind}_tiny" / "case_A.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def model_inputs(case: dict[str, np.ndarray]):
    """case_A as sample_actions' arguments: images float[B, 3, 224, 224] in [-1, 1], masks, tokens, state."""
    import torch

    images = [torch.from_numpy(case[f"image/{c}"]).permute(0, 3, 1, 2).contiguous() for c in CAMERAS]
    masks = [torch.from_numpy(case[f"image_mask/{c}"]) for c in CAMERAS]
    tokens = torch.from_numpy(case["tokenized_prompt"]).long()
    token_mask = torch.from_numpy(case["tokenized_prompt_mask"])
    return images, masks, tokens, token_mask, torch.from_numpy(case["state"])


def policy_batch(case: dict[str, np.ndarray]) -> dict:
    """case_A as a LeRobot batch (what the processor pipeline hands the policy): images float [0, 1]."""
    import torch

    batch = {f"observation.images.{c}": torch.from_numpy(case[f"image_u8/{c}"]).permute(0, 3, 1, 2).float() / 255.0
             for c in CAMERAS}
    batch["observation.state"] = torch.from_numpy(case["state"])
    batch["observation.language.tokens"] = torch.from_numpy(case["tokenized_prompt"]).long()
    batch["observation.language.attention_mask"] = torch.from_numpy(case["tokenized_prompt_mask"])
    return batch


def sample(policy, kind: str, case: dict[str, np.ndarray]):
    """One `sample_actions` call on case_A's inputs and noise -> float32[B, H, 32] numpy."""
    import torch

    images, masks, tokens, token_mask, state = model_inputs(case)
    noise = torch.from_numpy(case["noise"])
    with torch.no_grad():
        if kind == "pi0":
            out = policy.model.sample_actions(images, masks, tokens, token_mask, state, noise=noise)
        else:
            out = policy.model.sample_actions(images, masks, tokens, token_mask, noise=noise)
    return out.numpy()


LIBERO_CAMERAS = ("image", "image2")  # LeRobot's LIBERO datasets: agentview, wrist


def save_libero_checkpoint(kind: str, folder: Path, tokenizer_dir: Path) -> Path:
    """A LeRobot checkpoint folder as `save_pretrained` writes it, LIBERO-shaped (2 cameras, 8-d state, 7-d
    actions), tiny weights, with LeRobot's own processor pipelines. The tokenizer step points at a local HF
    tokenizer built from pi0viz's bundled sentencepiece model (PaliGemma's lives on the Hub)."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature

    save_local_tokenizer(tokenizer_dir)
    features = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in LIBERO_CAMERAS}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (8,))
    config = tiny_config(kind, input_features=features,
                         output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))})
    with tiny_variant(kind):
        policy = tiny_policy_from_config(kind, config)
    def stats(dim: int, center: float, spread: float) -> dict:  # pi0 normalizes by mean/std, pi0.5 by quantiles
        c, s = torch.full((dim,), center), torch.full((dim,), spread)
        return {"mean": c, "std": s, "q01": c - s, "q99": c + s, "min": c - 2 * s, "max": c + 2 * s}

    stats = {"observation.state": stats(8, 0.0, 1.0), "action": stats(7, 0.5, 2.0)}
    module = lerobot_module(kind)
    processors = __import__(module.__name__.replace("modeling_", "processor_"), fromlist=["_"])
    make = processors.make_pi0_pre_post_processors if kind == "pi0" else processors.make_pi05_pre_post_processors
    real_step = processors.TokenizerProcessorStep

    def local_tokenizer(**kwargs):
        return real_step(**{**kwargs, "tokenizer_name": str(tokenizer_dir)})

    processors.TokenizerProcessorStep = local_tokenizer
    try:
        pre, post = make(config, dataset_stats=stats)
    finally:
        processors.TokenizerProcessorStep = real_step
    policy.save_pretrained(folder)
    pre.save_pretrained(folder)
    post.save_pretrained(folder)
    return folder


def save_local_tokenizer(folder: Path):
    """A Hugging Face Gemma tokenizer saved in `folder`, built from pi0viz's bundled sentencepiece model (what
    LeRobot's tokenizer step loads with AutoTokenizer.from_pretrained). Built with `from_pretrained` on a folder
    holding `tokenizer.model`: on transformers 5 `GemmaTokenizer(vocab_file=...)` maps every token to <unk>."""
    import shutil

    from transformers import GemmaTokenizer

    from pi0viz.policy.tokenizer import BUNDLED_MODEL

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUNDLED_MODEL, folder / "tokenizer.model")
    # PaliGemma's tokenizer starts with BOS; transformers 5 adds none unless told
    tokenizer = GemmaTokenizer.from_pretrained(folder, add_bos_token=True)
    ids = tokenizer("pick up the bowl")["input_ids"]
    if tokenizer.unk_token_id in ids or ids[0] != tokenizer.bos_token_id:  # e.g. a tokenizer that knows no word
        raise AssertionError(f"the local tokenizer gives 'pick up the bowl' as {ids} (<unk> or no BOS)")
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_policy_from_config(kind: str, config):
    from pi0viz.torch_capture import load_openpi_params

    module = lerobot_module(kind)
    policy = (module.PI0Policy if kind == "pi0" else module.PI05Policy)(config)
    load_openpi_params(policy, reference_params(kind))
    return policy.eval()
