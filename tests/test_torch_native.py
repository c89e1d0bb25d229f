"""transformers' own PI0 (PI0ForConditionalGeneration, transformers 5.23.0) under pi0viz: the converter, the capture
against openpi's recorded cases, absent cameras as masked slots, the eager switch, and the `hf-pi0:DIR` policy in
process and behind `pi0viz serve`. Runs in .venv-hf (stack hf-native, tests/torch_stacks.py).

Parity: openpi's tiny JAX checkpoint through `load_openpi_params_native` into transformers' real model; openpi's
inputs and noise must give its actions (1e-4) and attention (2e-5), masked keys exactly 0. Measured here (float32
CPU): case A actions 3.0e-5, attention 2.8e-6. An absent camera (no tokens, the processor's way) gives what openpi's
masked camera gives (its tokens kept with a False mask), run through the same model: actions 9.5e-7, attention 1.9e-7.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from extras import ROOT
from torch_stacks import HF_NATIVE, require_stack, one_thread  # noqa: F401  (one_thread: autouse)

stack = require_stack(HF_NATIVE)

import torch
import torch_stacks as tst
import torch_support as ts

from pi0viz import load_bundle, save_bundle
from pi0viz.errors import CaptureError, CheckpointError
from pi0viz.torch_capture import CaptureOptions, capture_attention
from pi0viz.torch_capture.convert_native import canonical_name, load_openpi_params_native, openpi_to_native_state_dict

ACTIONS_ATOL = 1e-4
ATTENTION_ATOL = 2e-5
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
REDUCED = CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16")


@pytest.fixture(scope="module")
def model():
    return tst.native_tiny("pi0")


@pytest.fixture(scope="module")
def case_a():
    return ts.reference_case("pi0")


@pytest.fixture(scope="module")
def run_a(model, case_a):
    with capture_attention(model) as cap:
        actions = tst.native_sample(model, "pi0", case_a)
    return cap, actions


# -- weights ------------------------------------------------------------------------------------------------------


def test_converter_takes_names_from_the_model_and_fills_every_weight(model):
    params = ts.reference_params("pi0")
    own = model.state_dict()
    sd = openpi_to_native_state_dict(params, own)
    assert set(sd) == set(own)
    q = params["PaliGemma/llm/layers/attn/q_einsum_1/w"]  # [L, N, W, E]
    np.testing.assert_array_equal(sd["model.dit.layers.2.self_attn.q_proj.weight"][5 * 16 + 3], q[2, 5, :, 3])
    conv = sd["model.vlm.vision_tower.embeddings.patch_embedding.weight"]  # OIHW <- HWIO
    assert conv[4, 2, 13, 0] == params["PaliGemma/img/embedding/kernel"][13, 0, 2, 4]
    np.testing.assert_array_equal(sd["embed_action_time.state_proj.weight"], params["state_proj/kernel"].T)
    assert not sd["model.dit.embed_tokens.weight"].any()  # the expert's unread embedding: zeros, never random
    for key, value in own.items():  # the loaded model holds exactly the converted weights
        np.testing.assert_array_equal(value.numpy(), sd[key], err_msg=key)


def test_converter_follows_the_5_5_names_too():
    # transformers 5.5.4 keeps SigLIP's `vision_model.` level and nests the VLM one `model.` deeper
    keys = {k.replace("vision_tower.", "vision_tower.vision_model.").replace("model.vlm.", "model.vlm.model."): v
            for k, v in tst.native_tiny("pi0").state_dict().items()}
    sd = openpi_to_native_state_dict(ts.reference_params("pi0"), keys)
    assert set(sd) == set(keys)
    assert "model.vlm.model.vision_tower.vision_model.post_layernorm.weight" in sd
    assert canonical_name("paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.bias") == \
        canonical_name("model.vlm.vision_tower.post_layernorm.bias") == "vlm.vision_tower.post_layernorm.bias"


def test_a_weight_without_openpi_parameter_is_an_error_naming_it(model):
    params = ts.reference_params("pi0")
    own = dict(model.state_dict())
    own["model.dit.layers.4.self_attn.q_proj.weight"] = own["model.dit.layers.3.self_attn.q_proj.weight"]
    with pytest.raises(CheckpointError, match=r"1 weights .* no openpi parameter .*model\.dit\.layers\.4\.self_attn"):
        openpi_to_native_state_dict(params, own)
    renamed = {k.replace("model.dit.", "model.action_expert."): v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="would keep random values"):  # a layout the converter does not know
        openpi_to_native_state_dict(params, renamed)
    with pytest.raises(CheckpointError, match="pi0.5"):
        openpi_to_native_state_dict(ts.reference_params("pi05"), own)
    wider = tst.native_tiny("pi0")
    with pytest.raises(CheckpointError, match="shapes differ"):
        load_openpi_params_native(wider, {**params, "state_proj/kernel": np.zeros((16, 64), np.float32)})


# -- capture ------------------------------------------------------------------------------------------------------


def test_actions_and_attention_match_openpi_case_a(run_a, case_a):
    cap, actions = run_a
    np.testing.assert_allclose(actions, case_a["actions"], rtol=0, atol=ACTIONS_ATOL)
    attention = cap.attention()  # [D, L, B, K, G, Q, S]
    assert attention.shape == (10, 4, 1, 1, 8, 51, 867) and attention.dtype == np.float32
    np.testing.assert_allclose(attention[case_a["attention_steps"]], case_a["attention_probs"], rtol=0,
                               atol=ATTENTION_ATOL)
    assert np.all(attention[..., 788:816] == 0)  # the prompt's 28 pads
    assert np.all(attention[..., 0, 817:] == 0)  # the state token sees no action token
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


def test_an_absent_camera_equals_openpis_masked_camera(model, case_a):
    # openpi masks a missing camera: its 256 tokens stay in the prefix with a False mask (exactly 0 attention, no
    # position advance). transformers' processor gives it no tokens at all. The same model run both ways must agree,
    # once pi0viz has put the absent camera's keys back into their slot.
    masked_inputs = tst.native_inputs(case_a)
    masked_inputs["attention_mask"][:, 512:768] = 0  # openpi's way, in the native model
    with capture_attention(model) as masked, torch.no_grad():
        want = model.sample_actions(**masked_inputs).numpy()
    with capture_attention(model) as absent:
        actions = tst.native_sample(model, "pi0", case_a, absent=("right_wrist_0_rgb",))
    np.testing.assert_allclose(actions, want, rtol=0, atol=1e-5)
    reference, attention = masked.attention(), absent.attention()
    assert attention.shape == reference.shape == (10, 4, 1, 1, 8, 51, 867)
    assert np.all(reference[..., 512:768] == 0) and np.all(attention[..., 512:768] == 0)
    np.testing.assert_allclose(attention, reference, rtol=0, atol=1e-6)
    b, m = absent.bundle(camera_names=CAMERAS), masked.bundle(camera_names=CAMERAS)
    assert b.image_masks.tolist() == m.image_masks.tolist() == [[True, True, False]]
    np.testing.assert_array_equal(b.token_ids, case_a["tokenized_prompt"])
    np.testing.assert_array_equal(b.token_mask, m.token_mask)


def test_a_middle_camera_absent_keeps_the_slot_order(model, case_a):
    with capture_attention(model, REDUCED) as cap:
        tst.native_sample(model, "pi0", case_a, absent=("left_wrist_0_rgb",))
    b = cap.bundle()
    assert b.camera_names == ["camera_0", "camera_1", "camera_2"] and b.image_masks.tolist() == [[True, False, True]]
    assert b.attention.shape == (10, 4, 1, 1, 1, 50, 816)
    assert np.all(b.attention[..., 256:512] == 0)
    assert b.attention[..., :256].max() > 0 and b.attention[..., 512:768].max() > 0
    for c, name in ((0, "base_0_rgb"), (2, "right_wrist_0_rgb")):
        np.testing.assert_array_equal(b.images[:, c], case_a[f"image_u8/{name}"])


def test_mixed_camera_counts_in_a_batch_are_one_line(model, case_a):
    two = {k: (np.concatenate([v, v]) if k.startswith(("image", "state", "noise", "tokenized")) and k != "image_keys"
               else v) for k, v in case_a.items()}
    inputs = tst.native_inputs(two)  # sample 0: three cameras; sample 1: two, its prompt shifted left
    inputs["pixel_attention_mask"][1, 2] = False
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ids[1] = torch.cat([ids[1, 256:], torch.zeros(256, dtype=ids.dtype)])
    mask[1] = torch.cat([mask[1, 256:], torch.zeros(256, dtype=mask.dtype)])
    with capture_attention(model) as cap, torch.no_grad():
        model.sample_actions(**inputs)
    with pytest.raises(CaptureError, match=r"^the batch mixes camera counts \[2, 3\]") as err:
        cap.bundle()
    assert "\n" not in str(err.value)


def test_bundle_holds_what_the_model_saw(run_a, case_a, tmp_path):
    from pi0viz.render import RenderOptions, render_bundle

    cap, actions = run_a
    b = cap.bundle(camera_names=CAMERAS, tokenizer=lambda ids: [f"t{i}" for i in ids], actions=actions,
                   prompt="pick up the bowl", inference_step=3)
    for c, name in enumerate(CAMERAS):  # [-1, 1] pixels back to the uint8 input, exactly
        np.testing.assert_array_equal(b.images[:, c], case_a[f"image_u8/{name}"])
    np.testing.assert_array_equal(b.token_ids, case_a["tokenized_prompt"])  # the image positions are not prompt
    np.testing.assert_array_equal(b.token_mask, case_a["tokenized_prompt_mask"])
    assert b.image_masks.all() and b.token_pieces[0, 0] == "t2" and b.token_pieces[0, 20] == ""
    assert (b.num_state_tokens, b.num_action_tokens, b.patch_grid) == (1, 50, (16, 16))
    np.testing.assert_allclose(b.diffusion_times, np.linspace(1.0, 0.1, 10), atol=1e-6)
    assert cap.bundle().camera_names == ["camera_0", "camera_1", "camera_2"]
    bundle = load_bundle(save_bundle(b, tmp_path / "call.npz"))
    render_bundle(bundle, tmp_path / "viz", RenderOptions(steps="9", action_tokens="0", layers="3", workers=1))
    cell = tmp_path / "viz" / "inference_timestep_3" / "diffusion_timestep_9" / "action_token_0" / "layer_3"
    assert sorted(p.name for p in cell.iterdir()) == sorted(
        [f"fused_attention_on_{c}.jpg" for c in CAMERAS] + ["fused_attention_on_text.jpg"])


def test_reductions_on_device_equal_reducing_the_full_capture(model, run_a, case_a):
    full = run_a[0].attention()
    with capture_attention(model, REDUCED) as small:
        tst.native_sample(model, "pi0", case_a)
    reduced = small.attention()
    want = full[:, :, :, :, :, 1:, :816].max(axis=(3, 4), keepdims=True).astype(np.float16)
    assert reduced.dtype == np.float16 and reduced.shape == want.shape
    np.testing.assert_array_equal(reduced, want)


def hook_counts(model) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]


def test_eager_only_inside_the_block_and_restored_on_error(model, case_a):
    dit = model.model.dit
    assert dit.config._attn_implementation == "sdpa"  # transformers' default: no weights for hooks
    before = hook_counts(model)
    plain = tst.native_sample(model, "pi0", case_a)
    with capture_attention(model) as cap:
        assert dit.config._attn_implementation == "eager"
        assert model.model.vlm.config.text_config._attn_implementation == "sdpa"  # the prefix keeps its own
        assert sum(hook_counts(model)) == sum(before) + tst.native_capture_hooks
        captured = tst.native_sample(model, "pi0", case_a)
    assert dit.config._attn_implementation == "sdpa" and hook_counts(model) == before
    np.testing.assert_allclose(captured, plain, rtol=0, atol=1e-5)  # eager and SDPA: the same actions
    inputs = tst.native_inputs(case_a)
    inputs["input_ids"] = inputs["input_ids"][:, :700]  # fewer image tokens than cameras: the model itself raises
    with pytest.raises(Exception), capture_attention(model), torch.no_grad():
        model.sample_actions(**inputs)
    assert dit.config._attn_implementation == "sdpa" and hook_counts(model) == before
    with pytest.raises(KeyError), capture_attention(model):
        raise KeyError("user code fails inside the block")
    assert dit.config._attn_implementation == "sdpa" and hook_counts(model) == before
    tst.native_sample(model, "pi0", case_a)
    assert len(cap.calls) == 1  # the model ran after the block: nothing reached the finished capture


def test_pi0model_alone_is_captured_too(model, case_a):
    inputs = tst.native_inputs(case_a)
    state, noise = inputs.pop("state"), inputs.pop("noise")
    action_embeds = model.embed_action_time(state, noise, torch.ones(1))
    with capture_attention(model.model) as cap, torch.no_grad():
        model.model(action_embeds=action_embeds, **inputs)  # one denoising step at t = 1, prefix computed inside
    attention = cap.attention()
    assert attention.shape == (1, 4, 1, 1, 8, 51, 867)
    np.testing.assert_allclose(attention[0], case_a["attention_probs"][0], rtol=0, atol=ATTENTION_ATOL)


def test_compiled_native_model_is_refused(model):
    from pi0viz.errors import CompiledModelError

    with pytest.raises(CompiledModelError, match="_orig_mod"), capture_attention(torch.compile(model)):
        pass
    assert model.model.dit.config._attn_implementation == "sdpa"


# -- the hf-pi0:DIR policy ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    return tst.native_save_libero_checkpoint(root / "pi0_native_tiny", root / "tokenizer")


@pytest.fixture(scope="module")
def request_():
    from pi0viz.policy.libero_frames import load_libero_frames

    return load_libero_frames()[0].observation()  # real LIBERO frames, as openpi's client sends them


def test_policy_serves_the_folder_through_its_processor(folder, request_):
    from transformers import PI0Processor

    from pi0viz.policy.spec import load_policy

    policy = load_policy(f"hf-pi0:{folder}")
    assert policy.description == "transformers PI0 (pi0_native_tiny)" and policy.action_dims == 7
    torch.manual_seed(7)  # sample_actions draws its noise from torch's generator
    out = policy.infer(request_, return_bundle=True, inference_step=2)
    actions, b = out["actions"], out["attention_bundle"]
    assert actions.shape == (50, 7) and actions.dtype == np.float32
    # the same call by hand, as a transformers user writes it: processor -> sample_actions -> unnormalize
    processor = PI0Processor.from_pretrained(folder)
    images = [np.asarray(request_["observation/image"]), np.asarray(request_["observation/wrist_image"])]
    inputs = processor(images=[images], text=[str(request_["prompt"])],
                       state=np.asarray(request_["observation/state"], np.float32)[None])
    torch.manual_seed(7)
    with torch.no_grad():
        chunk = policy.model.sample_actions(**inputs).numpy()[0, :, :7]
    # the policy captured (eager expert), the hand call did not (SDPA): float32 rounding apart, ~2e-6
    np.testing.assert_allclose(actions, chunk * (2.0 + 1e-8) + 0.5, rtol=0, atol=1e-4)
    assert b.camera_names == ["base_0_rgb", "left_wrist_0_rgb"] and b.image_masks.all()
    assert b.attention.shape == (10, 4, 1, 1, 8, 51, 2 * 256 + b.token_ids.shape[1] + 51)
    pieces = [p for p in b.token_pieces[0] if p]
    assert pieces[0] == "<bos>" and pieces[-1] == "\n" and str(b.prompt[0]) == str(request_["prompt"])
    np.testing.assert_array_equal(b.images[0, 0], np.asarray(request_["observation/image"]))  # 224 x 224: exact
    from pi0viz.errors import ObservationError

    with pytest.raises(ObservationError, match="state of 8 values"):
        policy.infer({**request_, "observation/state": np.zeros(9, np.float32)})


def test_a_folder_with_missing_weights_is_refused_not_random(folder, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from pi0viz.policy.hf_pi0_policy import HFPI0Policy

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["action_out_proj.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"1 model weights are missing .*action_out_proj\.weight"):
        HFPI0Policy.from_pretrained(broken)
    with pytest.raises(CheckpointError, match="not a transformers PI0 folder"):
        HFPI0Policy.from_pretrained(tmp_path / "nowhere")


@pytest.mark.slow  # ~5 s of CPU, but importing transformers in a fresh process takes ~20 s on a loaded machine
def test_pi0viz_serve_policy_hf_pi0(folder, request_):
    """`pi0viz serve --policy hf-pi0:DIR`, the command itself, answering pi0viz's client with openpi's protocol."""
    from pi0viz.serving.client import PolicyClient

    server = subprocess.Popen([sys.executable, "-m", "pi0viz.cli", "serve", "--policy", f"hf-pi0:{folder}",
                               "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # shared cores: no spinning threads
    try:
        lines = []
        for line in server.stderr:  # "serving ... on ws://127.0.0.1:PORT ..." once it listens
            lines.append(line)
            if (found := re.search(r"ws://127\.0\.0\.1:(\d+)", line)):
                break
        else:
            pytest.fail("pi0viz serve --policy hf-pi0 stopped:\n" + "".join(lines))
        assert "transformers PI0 (pi0_native_tiny)" in line
        client = PolicyClient("127.0.0.1", int(found.group(1)))
        out = client.infer(request_, return_attention=True, inference_step=1, fuse_heads=True)
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert np.asarray(out["actions"]).shape == (50, 7)
    b = out["attention_bundle"]
    assert b.attention_heads == "max" and b.camera_names == ["base_0_rgb", "left_wrist_0_rgb"]
