"""The prefix's own attention from PyTorch pi0 / pi0.5 (`capture_attention(model, CaptureOptions(prefix=True))`,
torch_capture/prefix.py) on each stack's tiny model with openpi's tiny weights (tests/torch_stacks.py; scripts/test.sh
runs this module under each stack's venv).

Parity: PaliGemma's prefix-pass probabilities (max over heads) against pi0viz's JAX prefix capture (exact against
openpi) on case_A, stored by scripts/make_torch_prefix_reference.py in tests/data/torch_prefix_reference.npz (the
LeRobot 0.6 and transformers venvs have no JAX). Measured on this machine (float32 CPU), LeRobot 0.4.4 and 0.6.1 alike:
pi0 2.8e-7, pi0 with a camera masked 1.4e-7, pi0.5 2.8e-7; transformers' own PI0 (pi0 only) 2.8e-7 and 1.4e-7 on the
valid tokens' rows (the test prints them, -s). On native PI0 a padding or absent-camera token's own row is not
openpi's: its processor masks pads as keys only (their rows read the prompt), and gives an absent camera no tokens
(its rows are 0 here), where openpi masks the whole row (a uniform row); such rows are never read by anyone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch_stacks import require_stack, one_thread  # noqa: F401  (one_thread: autouse)

stack = require_stack()  # this interpreter's PyTorch stack (all of them run this module)

import torch
import torch_support as ts

from pi0viz.core.prefix_bundle import load_prefix, save_prefix
from pi0viz.torch_capture import CaptureError, CaptureOptions, capture_attention

ATTENTION_ATOL = 2e-5
REFERENCE = Path(__file__).parent / "data" / "torch_prefix_reference.npz"
CASES = {"pi0": ("pi0", None), "pi0_masked": ("pi0", "right_wrist_0_rgb"), "pi05": ("pi05", None)}



@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def policies():
    return {kind: stack.tiny(kind) for kind in stack.kinds}


def case_of(name: str) -> tuple[str, dict[str, np.ndarray]]:
    kind, masked = CASES[name]
    case = ts.reference_case(kind)
    if masked is not None:
        case = {**case, f"image_mask/{masked}": np.zeros(1, bool)}
    return kind, case


@pytest.fixture(scope="module")
def captured(policies):
    """Per case name: (case, actions, the capture) of one sampling call with the prefix captured (float32)."""
    out = {}
    for name, (kind, _) in CASES.items():
        if kind in stack.kinds:
            kind, case = case_of(name)
            with capture_attention(policies[kind], CaptureOptions(prefix=True)) as cap:
                actions = stack.sample(policies[kind], kind, case)
            out[name] = (case, actions, cap)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_prefix_attention_matches_the_jax_reference(captured, reference, name):
    if CASES[name][0] not in stack.kinds:
        pytest.skip(f"{stack.name} has no {CASES[name][0]}")
    case, _, cap = captured[name]
    attention = cap.prefix_attention()  # [L, B, P, P]
    rows, want = reference[f"{name}/rows"], reference[f"{name}/attention"]
    assert attention.dtype == np.float32 and attention.shape[:2] == (4, 1)
    assert attention.shape[-1] == attention.shape[-2] == 768 + case["tokenized_prompt"].shape[1]
    if not stack.lerobot:  # native PI0: rows of padding / absent cameras differ by design (module docstring)
        prefix = cap.prefix(**stack.camera_names())
        keep = np.concatenate([prefix.image_masks.repeat(256), prefix.token_mask])[rows]
        assert keep.sum() > 20
        rows, want = rows[keep], want[:, keep]
    got = attention[:, 0][:, rows]
    print(f"{stack.name} {name}: prefix attention {np.abs(got - want).max():.3g} from pi0viz's JAX (exact vs openpi)")
    np.testing.assert_allclose(got, want, rtol=0, atol=ATTENTION_ATOL)


def test_side_file_holds_the_blocks_and_what_the_model_saw(captured, tmp_path):
    case, _, cap = captured["pi0_masked"]
    prefix = cap.prefix(tokenizer=lambda ids: [f"t{i}" for i in ids], prompt="pick up the bowl", inference_step=3,
                        **stack.camera_names())
    full = cap.prefix_attention()[:, 0]  # [L, P, P]
    assert prefix.camera_names == list(ts.CAMERAS) and prefix.patch_grid == (16, 16)
    np.testing.assert_array_equal(prefix.image_to_prompt, full[:, :768, 768:].astype(np.float16))
    np.testing.assert_array_equal(prefix.image_to_image, full[:, :768, :768].astype(np.float16))
    np.testing.assert_array_equal(prefix.prompt_to_image, full[:, 768:, :768].astype(np.float16))
    assert prefix.image_masks.tolist() == [True, True, False]
    np.testing.assert_array_equal(prefix.token_mask, case["tokenized_prompt_mask"][0])
    assert (prefix.image_to_image[:, :512, 512:] == 0).all()  # the masked camera's patches are never read
    assert (prefix.image_to_prompt[:, :512][..., ~prefix.token_mask] == 0).all()  # nor are the prompt's pads
    assert (prefix.image_to_prompt[:, :512][..., prefix.token_mask].astype(np.float32).sum(-1) > 0).all()
    for c, name in enumerate(ts.CAMERAS):  # [-1, 1] pixels back to the uint8 input, exactly
        np.testing.assert_array_equal(prefix.images[c], case[f"image_u8/{name}"][0])
    assert prefix.token_pieces[0] == f"t{case['tokenized_prompt'][0, 0]}" and prefix.token_pieces[-1] == ""
    back = load_prefix(save_prefix(prefix, tmp_path / "call.prefix.npz"))
    np.testing.assert_array_equal(back.image_to_prompt, prefix.image_to_prompt)
    assert (back.prompt, back.inference_step) == ("pick up the bowl", 3)


def test_capturing_the_prefix_changes_nothing_else(policies, captured):
    case, actions, cap = captured["pi0"]
    plain_actions = stack.sample(policies["pi0"], "pi0", case)  # no capture at all
    with capture_attention(policies["pi0"]) as plain:
        stack.sample(policies["pi0"], "pi0", case)
    if stack.lerobot:  # LeRobot runs the prefix eager anyway: bit for bit
        np.testing.assert_array_equal(actions, plain_actions)
        np.testing.assert_array_equal(cap.attention(), plain.attention())  # the expert's capture is unchanged
    else:  # native PI0: the block switches the VLM from SDPA to eager (float32 rounding, 9.5e-7 measured)
        np.testing.assert_allclose(actions, plain_actions, rtol=0, atol=1e-5)
        np.testing.assert_allclose(cap.attention(), plain.attention(), rtol=0, atol=1e-6)
        assert policies["pi0"].model.vlm.language_model.config._attn_implementation == "sdpa"  # restored
    with pytest.raises(CaptureError, match="prefix pass recorded 0 of 4"):
        plain.prefix()


def test_prefix_hooks_come_and_go_and_float16_is_the_rounded_capture(policies, captured):
    policy = policies["pi0"]
    case, _, full = captured["pi0"]
    def hooks() -> list[int]:
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in policy.modules()]

    before = hooks()
    with capture_attention(policy, CaptureOptions(prefix=True, dtype="float16", fuse_heads=True)) as cap:
        assert sum(hooks()) == sum(before) + stack.capture_hooks(policy) + 4  # one per PaliGemma layer
        stack.sample(policy, "pi0", case)
    assert hooks() == before
    np.testing.assert_array_equal(cap.prefix_attention(), full.prefix_attention().astype(np.float16))
