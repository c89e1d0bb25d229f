"""PyTorch capture on each PyTorch stack's real pi0 / pi0.5 (tiny variant, openpi's tiny reference weights): LeRobot
0.4.4's and 0.6.1's PI0Policy / PI05Policy, transformers' native PI0ForConditionalGeneration (tests/torch_stacks.py;
scripts/test.sh runs this module under each stack's venv).

Parity: openpi's JAX checkpoint goes through pi0viz's converter into the stack's model; case_A's inputs and noise
must reproduce openpi's recorded actions (1e-4) and attention (2e-5). Measured on this machine (float32 CPU; openpi's
JAX run fuses ops under XLA), the same on LeRobot 0.4.4 and 0.6.1: pi0 actions 4.72e-5, attention 2.79e-6; pi0.5
3.68e-5 / 1.48e-6; transformers' native PI0 (pi0 only): 3.02e-5 / 2.85e-6. The test prints each stack's figures (-s).
"""

from __future__ import annotations

import numpy as np
import pytest
from torch_stacks import LEROBOT_STACKS, only, require_stack, one_thread  # noqa: F401  (one_thread: autouse)

stack = require_stack()  # this interpreter's PyTorch stack (all of them run this module)

import torch
import torch_support as ts

from pi0viz import load_bundle, save_bundle
from pi0viz.errors import CheckpointError
from pi0viz.torch_capture import (
    CaptureError,
    CaptureOptions,
    CompiledModelError,
    capture_attention,
    openpi_to_torch_state_dict,
)

ACTIONS_ATOL = 1e-4
ATTENTION_ATOL = 2e-5
REDUCED = CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16")



@pytest.fixture(scope="module")
def policies():
    """One tiny model per kind of this stack for the whole module (building one takes seconds)."""
    return {kind: stack.tiny(kind) for kind in stack.kinds}


@pytest.fixture(scope="module", params=stack.kinds)  # transformers has no pi0.5
def run(request, policies):
    """Per kind: the model, case_A, and one full capture of its sampling call on case_A."""
    kind = request.param
    policy, case = policies[kind], ts.reference_case(kind)
    with capture_attention(policy) as cap:
        actions = stack.sample(policy, kind, case)
    return kind, policy, case, cap, actions


def test_converter_maps_every_leaf_into_torch_layout():
    params = ts.reference_params("pi0")
    sd = openpi_to_torch_state_dict(params, prefix="")
    q = params["PaliGemma/llm/layers/attn/q_einsum_1/w"]  # [L, N, D, H]
    n, d, h = 5, 7, 3  # query head 5, input feature 7, head dim 3 of layer 2
    q_proj = sd["paligemma_with_expert.gemma_expert.model.layers.2.self_attn.q_proj.weight"]  # [N * H, D]
    assert q_proj[n * 16 + h, d] == q[2, n, d, h]
    kv = params["PaliGemma/llm/layers/attn/kv_einsum/w"]  # [L, 2, K, D, H]
    v = sd["paligemma_with_expert.paligemma.model.language_model.layers.1.self_attn.v_proj.weight"]
    assert np.array_equal(v, kv[1, 1, 0].T)
    conv = sd["paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"]
    assert conv[4, 2, 13, 0] == params["PaliGemma/img/embedding/kernel"][13, 0, 2, 4]  # OIHW <- HWIO
    with pytest.raises(CheckpointError, match="no PyTorch counterpart"):
        openpi_to_torch_state_dict({**params, "PaliGemma/llm/extra/w": np.zeros(1)})


def test_actions_and_attention_match_openpi(run):
    kind, _, case, cap, actions = run
    print(f"{stack.name} {kind}: actions {np.abs(actions - case['actions']).max():.3g}, attention "
          f"{np.abs(cap.attention()[case['attention_steps']] - case['attention_probs']).max():.3g} from openpi's")
    np.testing.assert_allclose(actions, case["actions"], rtol=0, atol=ACTIONS_ATOL)
    attention = cap.attention()  # [D, L, B, K, G, Q, S]
    assert attention.shape[:2] == (10, 4) and attention.dtype == np.float32
    np.testing.assert_allclose(attention[case["attention_steps"]], case["attention_probs"], rtol=0, atol=ATTENTION_ATOL)


def test_bundle_holds_what_the_model_saw(run):
    kind, _, case, cap, actions = run
    b = cap.bundle(tokenizer=lambda ids: [f"t{i}" for i in ids], actions=actions, prompt="pick up the bowl",
                   **stack.camera_names())
    assert b.camera_names == list(ts.CAMERAS)  # LeRobot: from its config.image_features; native: the caller's
    for c, name in enumerate(ts.CAMERAS):  # [-1, 1] pixels back to the uint8 input, exactly
        np.testing.assert_array_equal(b.images[:, c], case[f"image_u8/{name}"])
    np.testing.assert_array_equal(b.token_ids, case["tokenized_prompt"])
    np.testing.assert_array_equal(b.token_mask, case["tokenized_prompt_mask"])
    assert b.image_masks.all()
    first_pad = int(case["tokenized_prompt_mask"][0].sum())
    assert b.token_pieces[0, 0] == f"t{case['tokenized_prompt'][0, 0]}" and b.token_pieces[0, first_pad] == ""
    assert (b.num_state_tokens, b.num_action_tokens) == ((1, 50) if kind == "pi0" else (0, 10))
    np.testing.assert_allclose(b.diffusion_times, np.linspace(1.0, 0.1, 10), atol=1e-6)


def test_reductions_on_device_equal_reducing_the_full_capture(run):
    kind, policy, case, cap, _ = run
    with capture_attention(policy, REDUCED) as small:
        stack.sample(policy, kind, case)
    full, reduced = cap.attention(), small.attention()
    ns, prefix = (1, 816) if kind == "pi0" else (0, 968)
    want = full[:, :, :, :, :, ns:, :prefix].max(axis=(3, 4), keepdims=True).astype(np.float16)
    assert reduced.dtype == np.float16 and reduced.shape == want.shape
    np.testing.assert_array_equal(reduced, want)
    b = small.bundle()
    assert (b.attention_heads, b.attention_queries, b.attention_keys) == ("max", "actions", "prefix")


def test_masked_camera_is_masked_in_bundle_and_gets_no_attention(policies):
    policy, case = policies["pi0"], ts.reference_case("pi0")
    case = {**case, "image_mask/right_wrist_0_rgb": np.zeros(1, bool)}
    with capture_attention(policy) as cap:
        stack.sample(policy, "pi0", case)
    b = cap.bundle()
    assert b.image_masks.tolist() == [[True, True, False]]
    assert np.all(b.attention[..., 512:768] == 0) and np.all(b.attention[..., :512].max(-1) > 0)


@only(*LEROBOT_STACKS)  # LeRobot's select_action and its action queue
def test_select_action_captures_one_call_and_queued_actions_none(policies):
    policy = policies["pi0"]
    batch = ts.policy_batch(ts.reference_case("pi0"))
    policy.reset()
    with capture_attention(policy, CaptureOptions(fuse_heads=True)) as cap:
        policy.select_action(batch)
    assert len(cap.calls) == 1 and cap.attention().shape == (10, 4, 1, 1, 1, 51, 867)
    with capture_attention(policy) as queued:
        policy.select_action(batch)  # served from LeRobot's action queue: the model does not run
    with pytest.raises(CaptureError, match="no inference call"):
        queued.bundle()


def hook_counts(policy) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in policy.modules()]


def test_hooks_removed_on_exit_and_on_error(run):
    kind, policy, case, _, _ = run
    before = hook_counts(policy)
    with capture_attention(policy) as done:
        assert sum(hook_counts(policy)) == sum(before) + stack.capture_hooks(policy)
    assert hook_counts(policy) == before
    bad = {**case, "tokenized_prompt": case["tokenized_prompt"][:, :3]}  # ids and mask disagree
    with pytest.raises((RuntimeError, ValueError, IndexError)), capture_attention(policy):  # the model raises
        stack.sample(policy, kind, bad)
    assert hook_counts(policy) == before
    with pytest.raises(KeyError), capture_attention(policy):
        raise KeyError("user code fails inside the block")
    assert hook_counts(policy) == before
    stack.sample(policy, kind, case)
    assert done.calls == []  # the model ran after the block: nothing reached the finished capture


def test_compiled_models_are_refused_with_the_way_out(policies):
    policy = policies["pi0"]
    if stack.lerobot:
        policy.model.sample_actions = torch.compile(policy.model.sample_actions)  # what compile_model=True does
        try:
            with pytest.raises(CompiledModelError, match="compile_model=False"), capture_attention(policy):
                pass
        finally:
            del policy.model.sample_actions
    with pytest.raises(CompiledModelError, match="_orig_mod"), capture_attention(torch.compile(policy)):
        pass
    with pytest.raises(CaptureError, match="paligemma_with_expert"), capture_attention(torch.nn.Linear(2, 2)):
        pass


def test_bundle_saves_and_renders(run, tmp_path):
    from pi0viz.render import RenderOptions, render_bundle

    _, _, _, cap, actions = run
    path = save_bundle(cap.bundle(actions=actions, inference_step=3, **stack.camera_names()), tmp_path / "call.npz")
    bundle = load_bundle(path)
    render_bundle(bundle, tmp_path / "viz", RenderOptions(steps="9", action_tokens="0", layers="3", workers=1))
    cell = tmp_path / "viz" / "inference_timestep_3" / "diffusion_timestep_9" / "action_token_0" / "layer_3"
    assert sorted(p.name for p in cell.iterdir()) == sorted(
        [f"fused_attention_on_{c}.jpg" for c in ts.CAMERAS] + ["fused_attention_on_text.jpg"])


def test_a_call_stopped_mid_step_is_refused_not_misnumbered(policies):
    policy, case = policies["pi0"], ts.reference_case("pi0")
    layer2 = stack.expert_attention(policy)[2]
    seen = []

    def fail_at_step_3(module, args, output):
        seen.append(1)
        if len(seen) == 4:
            raise RuntimeError("stopped inside step 3")

    handle = layer2.register_forward_hook(fail_at_step_3)  # runs before the capture's own hook on that layer
    try:
        with pytest.raises(RuntimeError, match="step 3"), capture_attention(policy) as cap:
            stack.sample(policy, "pi0", case)
    finally:
        handle.remove()
    assert len(cap.calls[-1].records) == 3 * 4 + 2  # steps 0-2, then layers 0 and 1 of step 3
    with pytest.raises(CaptureError, match="not a whole number of steps of 4 layers"):
        cap.attention()


def test_the_pytorch_side_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys, pi0viz.torch_capture, pi0viz.policy.lerobot_policy, pi0viz.serving.server; "
            "print(sorted(m for m in ('jax', 'flax', 'orbax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
