"""LeRobot's pi0-FAST in PyTorch is refused by the capture with one line (pi0viz 0.2 raised a raw AttributeError
about `gemma_expert`). The core model is LeRobot's own PI0FastPytorch at tiny size (built offline: it fetches
nothing); PI0FastPolicy's constructor downloads physical-intelligence/fast and PaliGemma's tokenizer from the Hub,
so the policy object here is the real class given that core as its `.model` without running its constructor."""

from __future__ import annotations

import pytest
from torch_stacks import LEROBOT_STACKS, require_stack

require_stack(*LEROBOT_STACKS)  # LeRobot 0.4.4 and 0.6.1 both ship pi0_fast

import torch  # noqa: E402

from pi0viz.errors import CaptureError, Pi0vizError  # noqa: E402
from pi0viz.torch_capture import capture_attention  # noqa: E402


@pytest.fixture(scope="module")
def core():
    """LeRobot's PI0FastPytorch with openpi's tiny shapes (dummy Gemma, SigLIP mu/14), random weights."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.pi0_fast import modeling_pi0_fast as module
    from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig

    # LeRobot 0.4.4 builds transformers' PaliGemmaForConditionalGeneration, 0.6.1 its own ...WithPiGemma
    name = next(n for n in ("PaliGemmaForConditionalGeneration", "PaliGemmaForConditionalGenerationWithPiGemma")
                if getattr(module, n, None) is not None)
    real_config, real_paligemma = module.get_gemma_config, getattr(module, name)

    def tiny_paligemma(config):
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size = 32, 128
        vision.num_hidden_layers, vision.num_attention_heads = 1, 2
        vision.projection_dim = config.text_config.hidden_size
        return real_paligemma(config=config)

    module.get_gemma_config = lambda variant: module.GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8,
                                                                 num_kv_heads=1, head_dim=16)
    setattr(module, name, tiny_paligemma)
    try:
        features = {"observation.images.base_0_rgb": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)),
                    "observation.state": PolicyFeature(FeatureType.STATE, (8,))}
        config = PI0FastConfig(device="cpu", input_features=features,
                               output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))})
        return module.PI0FastPytorch(config).eval()
    finally:
        module.get_gemma_config = real_config
        setattr(module, name, real_paligemma)


def test_pi0_fast_core_is_refused_in_one_line(core) -> None:
    with pytest.raises(CaptureError) as err:
        with capture_attention(core):
            pass
    text = str(err.value)
    assert isinstance(err.value, Pi0vizError) and "\n" not in text
    assert "PI0FastPytorch is pi0-FAST" in text and "pi0_fast_libero" in text
    assert not any(h for m in core.modules() for h in m._forward_hooks.values())  # nothing left hooked


def test_pi0_fast_policy_is_refused_in_one_line(core) -> None:
    from lerobot.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

    policy = PI0FastPolicy.__new__(PI0FastPolicy)  # its constructor would download tokenizers
    torch.nn.Module.__init__(policy)
    policy.model = core
    with pytest.raises(CaptureError, match="PI0FastPolicy is pi0-FAST"):
        with capture_attention(policy):
            pass
