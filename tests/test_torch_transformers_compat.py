"""pi0viz's transformers compat module (scripts/torch_env/pi0viz_transformers_compat.py) on tiny real Gemma models.

The LeRobot parity tests (test_torch_capture.py) check the whole pi0 / pi0.5 against openpi; these pin the pieces:
stock Gemma stays stock, the pi0 path skips the sqrt(W) scaling, the cache is read without being extended, and
adaRMS modulates and gates as constructed here.
"""

from __future__ import annotations

import pytest
from extras import missing, require
from torch_stacks import LEROBOT044, require_stack

require_stack(LEROBOT044)  # the compat module serves LeRobot 0.4.4 on transformers 4.53.2 only
torch = require("torch", "torch")
transformers = require("transformers", "torch")
check = require("transformers.models.siglip.check", "torch")  # pi0viz's compat module (scripts/torch_env)
from transformers.models.gemma import GemmaConfig, modeling_gemma  # noqa: E402

if not hasattr(modeling_gemma, "AdaptiveRMSNorm"):
    missing("torch", "stock transformers (this one was patched in place by an old install)")

W = 32  # model width


def tiny_config(**extra) -> GemmaConfig:
    return GemmaConfig(vocab_size=16, hidden_size=W, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=8, **extra)


def tiny_model(**extra):
    torch.manual_seed(0)
    model = modeling_gemma.GemmaModel(tiny_config(**extra)).eval()
    with torch.no_grad():  # stock init leaves the norm weights at 0 (scale 1): give them something to do
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.normal_()
    return model


def test_check_passes_and_stock_gemma_is_untouched_but_pi0_skips_the_sqrt_width_scaling():
    assert check.check_whether_transformers_replace_is_installed_correctly()
    stock, pi0 = tiny_model(), tiny_model(use_adarms=False)
    pi0.load_state_dict(stock.state_dict())
    x = torch.randn(2, 5, W)
    with torch.no_grad():
        want = stock(inputs_embeds=x, use_cache=False).last_hidden_state
        plain = stock.norm(x)
        assert isinstance(plain, torch.Tensor)  # stock callers still get a tensor from the norm
        normed, gate = stock.norm(x, cond=None)  # LeRobot's call gets a pair
        # stock multiplies the inputs by sqrt(W); the pi0 path leaves that to LeRobot
        got = pi0(inputs_embeds=x * torch.tensor(W**0.5), use_cache=False).last_hidden_state
        unscaled = pi0(inputs_embeds=x, use_cache=False).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(unscaled, want, atol=1e-3)
    assert gate is None and torch.equal(normed, plain)
    with pytest.raises(ValueError, match="plain RMSNorm"):
        stock.norm(x, cond=torch.zeros(2, W))


def test_suffix_reads_the_prefix_cache_without_extending_it():
    model = tiny_model(use_adarms=False)
    prefix, suffix = torch.randn(1, 6, W), torch.randn(1, 3, W)
    with torch.no_grad():
        cache = model(inputs_embeds=prefix, use_cache=True).past_key_values
        assert cache.get_seq_length() == 6
        first = model(inputs_embeds=suffix, past_key_values=cache, use_cache=False).last_hidden_state
        second = model(inputs_embeds=suffix, past_key_values=cache, use_cache=False).last_hidden_state
        assert cache.get_seq_length() == 6  # each denoising step sees the prefix only
        # the same suffix run once over the whole sequence (no mask: causal), last 3 rows
        whole = model(inputs_embeds=torch.cat([prefix, suffix], 1), use_cache=False).last_hidden_state[:, 6:]
    assert torch.equal(first, second)
    torch.testing.assert_close(first, whole, rtol=1e-5, atol=1e-5)


def test_adarms_scales_shifts_and_gates_as_constructed():
    model = tiny_model(use_adarms=True, adarms_cond_dim=4)
    assert isinstance(model.layers[0].input_layernorm, modeling_gemma.AdaptiveRMSNorm)
    assert not hasattr(model.norm, "weight")  # the condition supplies the scale (checkpoint: only dense.*)
    scale, shift = torch.linspace(-0.5, 0.5, W), torch.linspace(1.0, 2.0, W)
    with torch.no_grad():
        for layer in model.layers:  # gate 0: attention and MLP branches add nothing
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.dense.weight.zero_()
                norm.dense.bias.zero_()
        model.norm.dense.weight.zero_()
        model.norm.dense.bias.copy_(torch.cat([scale, shift, torch.zeros(W)]))
        x, cond = torch.randn(2, 5, W), torch.randn(2, 4)
        out = model(inputs_embeds=x, use_cache=False, adarms_cond=cond).last_hidden_state
    rms = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(out, rms * (1 + scale) + shift, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a gate of 1 makes the residual a plain sum
        assert torch.equal(modeling_gemma._gated_residual(x, x, torch.ones(W)), x + x)
        assert torch.equal(modeling_gemma._gated_residual(x, x, None), x + x)
    with pytest.raises(ValueError, match="adaRMS"):
        model.norm(x, cond=None)
