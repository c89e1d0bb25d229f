"""Knockouts on PyTorch pi0 / pi0.5 (`pi0viz.torch_capture.knockout.knock_out_keys`: the attention mask edited by
forward pre-hooks) on each stack's tiny model with openpi's tiny weights (tests/torch_stacks.py).

Ground truths: removing a camera's keys from every query is the call with that camera masked (image mask False; the
first camera, whose masking shifts every later position alike, so RoPE's relative angles match); removing nothing is
the unmodified call bit for bit; every route and a single layer match pi0viz's JAX knockouts on pi0 case_A
(tests/data/torch_prefix_reference.npz, scripts/make_torch_prefix_reference.py) to the actions' 1e-4. Measured on
this machine (float32 CPU, LeRobot 0.4.4 and 0.6.1 alike): camera vs masked 1.7e-6 (pi0.5 5.1e-7); against JAX
4.7e-5 .. 4.9e-5 (the unmodified call's own distance to openpi is 4.7e-5). transformers' own PI0 runs the same hooks
on its SDPA boolean masks (an absent camera has no tokens there, which is what "masked" means for it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch_stacks import require_stack, one_thread  # noqa: F401  (one_thread: autouse)

stack = require_stack()  # this interpreter's PyTorch stack (all of them run this module)

import torch
import torch_support as ts

from pi0viz.torch_capture import CaptureError, knock_out_keys

ACTIONS_ATOL = 1e-4
MASKED_ATOL = 1e-5
REFERENCE = Path(__file__).parent / "data" / "torch_prefix_reference.npz"



@pytest.fixture(scope="module")
def policies():
    return {kind: stack.tiny(kind) for kind in stack.kinds}


@pytest.fixture(scope="module")
def unmodified(policies):
    """Per kind: case_A and its unmodified actions."""
    out = {}
    for kind in stack.kinds:
        case = ts.reference_case(kind)
        out[kind] = case, stack.sample(policies[kind], kind, case)
    return out


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_removing_a_camera_everywhere_is_masking_it_and_nothing_is_nothing(policies, unmodified, kind):
    if kind not in stack.kinds:
        pytest.skip(f"{stack.name} has no {kind}")
    policy, (case, base) = policies[kind], unmodified[kind]
    with knock_out_keys(policy, np.arange(256)):  # base_0_rgb's patches, every query, every layer
        knocked = stack.sample(policy, kind, case)
    masked = stack.sample(policy, kind, {**case, "image_mask/base_0_rgb": np.zeros(1, bool)})
    print(f"{stack.name} {kind}: camera knocked out vs masked {np.abs(knocked - masked).max():.3g}, "
          f"moved {np.abs(knocked - base).max():.3g}")
    assert np.abs(knocked - base).max() > 100 * MASKED_ATOL  # the camera matters, so the equality says something
    np.testing.assert_allclose(knocked, masked, rtol=0, atol=MASKED_ATOL)
    with knock_out_keys(policy, np.zeros(768 + case["tokenized_prompt"].shape[1], bool)):  # hooks on, no key
        np.testing.assert_array_equal(stack.sample(policy, kind, case), base)


def test_every_route_and_one_layer_match_the_jax_knockouts(policies):
    policy, case = policies["pi0"], ts.reference_case("pi0")
    with np.load(REFERENCE, allow_pickle=False) as z:
        names, keys, layers, want = (z[f"knockout/{k}"] for k in ("names", "keys", "layer", "actions"))
    for name, removed, layer, expected in zip(names, keys, layers, want):
        where = str(name).split()[1]
        with knock_out_keys(policy, removed, where=where, layers=None if layer < 0 else [int(layer)]):
            got = stack.sample(policy, "pi0", case)[0]
        print(f"{stack.name} {name}: {np.abs(got - expected).max():.3g} from JAX, moved "
              f"{np.abs(expected - case['actions'][0]).max():.3g}")
        np.testing.assert_allclose(got, expected, rtol=0, atol=ACTIONS_ATOL, err_msg=str(name))


def test_hooks_go_on_exit_and_mistakes_are_one_line_errors(policies, unmodified):
    policy, (case, base) = policies["pi0"], unmodified["pi0"]
    before = [len(m._forward_pre_hooks) for m in policy.modules()]
    with pytest.raises(KeyError), knock_out_keys(policy, [3], where="prefix", layers=[0, 3]):
        assert sum(len(m._forward_pre_hooks) for m in policy.modules()) == sum(before) + 2
        raise KeyError("user code fails inside the block")
    assert [len(m._forward_pre_hooks) for m in policy.modules()] == before
    np.testing.assert_array_equal(stack.sample(policy, "pi0", case), base)
    with pytest.raises(CaptureError, match="where='both'"), knock_out_keys(policy, [0], where="both"):
        pass
    with pytest.raises(CaptureError, match=r"layers \[7\] are outside"), knock_out_keys(policy, [0], layers=[7]):
        pass
    with pytest.raises(CaptureError, match="prefix holds 816"), knock_out_keys(policy, np.zeros(900, bool)):
        stack.sample(policy, "pi0", case)
    assert [len(m._forward_pre_hooks) for m in policy.modules()] == before
