"""The LIBERO policy: openpi's input mapping, normalization, the delta quirk, and the capture bundle.

Expected values are built by hand from the documented transforms (not by calling the code under test),
and end-to-end results are compared with the model core called directly on the same inputs.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pi0viz.core.bundle import CaptureBundle, load_bundle, save_bundle
from pi0viz.core.images import resize_with_pad
from pi0viz.errors import CheckpointError, ObservationError
from pi0viz.model import CaptureOptions, sample_actions
from pi0viz.policy.configs import make_transforms
from pi0viz.policy.jax_policy import Policy, to_observation
from pi0viz.policy.tokenizer import PromptTokenizer

PROMPT = "put the black bowl in the bottom drawer of the cabinet and close it"
STATE_MEAN = np.array([-0.05, 0.03, 1.0, 2.97, -0.1, 0.05, 0.03, -0.03])
STATE_STD = np.array([0.1, 0.15, 0.1, 0.3, 0.5, 0.3, 0.01, 0.01])
ACT_MEAN = np.array([0.06, 0.09, -0.1, -2.97, 0.0, 0.01, -0.3])
ACT_STD = np.array([0.3, 0.35, 0.45, 0.04, 0.07, 0.08, 0.95])
STATS = {"state": {"mean": STATE_MEAN, "std": STATE_STD}, "actions": {"mean": ACT_MEAN, "std": ACT_STD}}


@pytest.fixture(scope="module")
def tiny() -> Policy:
    return Policy.tiny(seed=0)


@pytest.fixture(scope="module")
def policy(tiny) -> Policy:
    """The tiny model with LIBERO-like (non-identity) norm stats, so normalization is visible."""
    return Policy(tiny.params, tiny.config, make_transforms(tiny.config, tiny.tokenizer, STATS), seed=0)


def make_obs(seed: int = 0, *, base_hw=(224, 224), wrist_hw=(100, 200)) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (*base_hw, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (*wrist_hw, 3), dtype=np.uint8),
        "observation/state": STATE_MEAN + STATE_STD * rng.normal(size=8),
        "prompt": PROMPT,
    }


def test_input_mapping(policy):
    obs = make_obs(wrist_hw=(100, 200))
    inp = policy.prepare(obs)
    assert list(inp.images) == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert inp.image_masks == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    np.testing.assert_array_equal(inp.images["base_0_rgb"], obs["observation/image"])  # 224: untouched
    wrist = inp.images["left_wrist_0_rgb"]
    assert wrist.shape == (224, 224, 3) and wrist.dtype == np.uint8
    assert (wrist[:56] == 0).all() and (wrist[168:] == 0).all()  # 100 x 200 -> 112 x 224, centered
    np.testing.assert_array_equal(wrist, resize_with_pad(obs["observation/wrist_image"]))
    assert inp.images["right_wrist_0_rgb"].shape == (224, 224, 3) and not inp.images["right_wrist_0_rgb"].any()
    # State: z-score with eps 1e-6, then zeros to 32.
    want = (obs["observation/state"] - STATE_MEAN) / (STATE_STD + 1e-6)
    assert inp.state.shape == (32,) and inp.state.dtype == np.float32
    np.testing.assert_allclose(inp.state[:8], want, rtol=1e-6)
    assert (inp.state[8:] == 0).all()
    # Prompt: the pi0 format of the policy's tokenizer, 48 slots.
    ids, mask = policy.tokenizer.tokenize(PROMPT, 48)
    np.testing.assert_array_equal(inp.token_ids, ids)
    np.testing.assert_array_equal(inp.token_mask, mask)
    # Model range: uint8 -> [-1, 1]; the masked right wrist is all -1 (black), batch axis 1.
    o = to_observation(inp)
    assert o.images["base_0_rgb"].shape == (1, 224, 224, 3)
    np.testing.assert_allclose(np.asarray(o.images["base_0_rgb"][0]), obs["observation/image"] / 255 * 2 - 1, atol=1e-6)
    assert (np.asarray(o.images["right_wrist_0_rgb"]) == -1).all()
    assert np.asarray(o.image_masks["right_wrist_0_rgb"]).tolist() == [False]
    assert o.state.shape == (1, 32) and o.tokenized_prompt.shape == (1, 48)


def test_256_images_and_float_images(policy):
    obs = make_obs(base_hw=(256, 256), wrist_hw=(256, 256))
    obs["observation/wrist_image"] = obs["observation/wrist_image"].astype(np.float32) / 255.0
    inp = policy.prepare(obs)
    assert inp.images["base_0_rgb"].shape == (224, 224, 3)
    assert inp.images["base_0_rgb"][:2].any() and inp.images["base_0_rgb"][-2:].any()  # no pad bars
    assert inp.images["left_wrist_0_rgb"].dtype == np.uint8


def test_postprocess_unnormalize_delta_and_dims(policy, tiny):
    rng = np.random.default_rng(1)
    model_actions = rng.normal(size=(50, 32)).astype(np.float32)
    inp = policy.prepare(make_obs())
    out = policy.postprocess(model_actions, inp.state)
    assert out.shape == (50, 7) and out.dtype == np.float32
    unnorm = model_actions[:, :7] * (ACT_STD + 1e-6) + ACT_MEAN
    state = inp.raw_state
    want = unnorm.copy()
    want[:, :6] += state[:6]  # pi0_libero: actions[..., :6] += state[:6]; the gripper (dim 6) is left alone
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    plain = Policy(tiny.params, tiny.config,
                   make_transforms(tiny.config, tiny.tokenizer, STATS, pipeline="pi0_base", action_dims=9))
    out9 = plain.postprocess(model_actions, inp.state)
    assert out9.shape == (50, 9)
    np.testing.assert_allclose(out9[:, :7], unnorm, rtol=1e-5, atol=1e-5)
    # Dims without stats are padded with mean 0 / std 1.
    np.testing.assert_allclose(out9[:, 7:], model_actions[:, 7:9] * (1 + 1e-6), rtol=1e-6)


def test_infer_matches_the_model_core(policy):
    obs = make_obs(3)
    noise = np.random.default_rng(3).normal(size=(50, 32)).astype(np.float32)
    res = policy.infer(obs, noise=noise)
    assert set(res) == {"actions", "policy_timing"}
    actions = res["actions"]
    assert actions.shape == (50, 7) and actions.dtype == np.float32 and np.isfinite(actions).all()
    inp = policy.prepare(obs)
    core = sample_actions(policy.params, policy.config, jax.random.key(9), to_observation(inp), noise=noise[None])
    core_actions = np.asarray(core.actions)[0]
    want = core_actions[:, :7] * (ACT_STD + 1e-6) + ACT_MEAN
    want[:, :6] += obs["observation/state"][:6]
    np.testing.assert_allclose(actions, want, rtol=1e-5, atol=1e-5)


def test_deterministic_per_seed_and_rng_split_per_call(tiny):
    obs = make_obs(4)
    a = Policy(tiny.params, tiny.config, tiny.transforms, seed=0)
    b = Policy(tiny.params, tiny.config, tiny.transforms, seed=0)
    c = Policy(tiny.params, tiny.config, tiny.transforms, seed=1)
    first_a, first_b, first_c = (p.infer(obs)["actions"] for p in (a, b, c))
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.allclose(first_a, first_c)
    second_a = a.infer(obs)["actions"]
    assert not np.allclose(first_a, second_a), "the policy RNG must advance between calls"
    np.testing.assert_array_equal(second_a, b.infer(obs)["actions"])
    # Policy.tiny is reproducible from its seed (same random weights).
    again = Policy.tiny(seed=0)
    for x, y in zip(jax.tree.leaves(again.params), jax.tree.leaves(tiny.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bundle_contents_and_round_trip(policy, tmp_path):
    obs = make_obs(5)
    noise = np.random.default_rng(5).normal(size=(50, 32)).astype(np.float32)
    plain = policy.infer(obs, noise=noise)["actions"]
    res = policy.infer(obs, return_bundle=True, inference_step=7, noise=noise)
    np.testing.assert_array_equal(res["actions"], plain)  # capturing does not change the actions
    b = res["attention_bundle"]
    assert isinstance(b, CaptureBundle)
    cfg = policy.config
    L, heads = cfg.llm.depth, cfg.llm.num_heads
    assert b.attention.shape == (10, L, 1, 1, heads, 51, 867) and b.attention.dtype == np.float32
    assert b.camera_names == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    inp = policy.prepare(obs)
    np.testing.assert_array_equal(b.images[0], np.stack([inp.images[c] for c in b.camera_names]))
    assert b.images.shape == (1, 3, 224, 224, 3) and b.images.dtype == np.uint8
    assert b.image_masks.tolist() == [[True, True, False]]
    np.testing.assert_array_equal(b.token_ids[0], inp.token_ids)
    np.testing.assert_array_equal(b.token_mask[0], inp.token_mask)
    n = int(inp.token_mask.sum())
    assert b.token_pieces[0, 0] == "<bos>" and b.token_pieces[0, n - 1] == "\\n" and (b.token_pieces[0, n:] == "").all()
    assert (b.num_state_tokens, b.num_action_tokens) == (1, 50)
    np.testing.assert_allclose(b.diffusion_times, np.arange(10, 0, -1) / 10, atol=1e-6)
    assert b.prompt.tolist() == [PROMPT] and b.inference_step == 7
    np.testing.assert_array_equal(b.actions[0], res["actions"])
    # Masked keys get exactly 0: the right wrist camera (keys 512-767) and the prompt pads (768 + n ... 815).
    assert (b.attention[..., 512:768] == 0).all()
    assert (b.attention[..., 768 + n : 816] == 0).all()
    assert (b.attention[..., :512] > 0).any() and (b.attention[..., 768 : 768 + n] > 0).all()
    np.testing.assert_allclose(b.attention.sum(-1), 1.0, atol=1e-5)
    # The bundle survives the file format.
    path = save_bundle(b, tmp_path / "call.npz")
    back = load_bundle(path)
    np.testing.assert_array_equal(back.attention, b.attention)
    np.testing.assert_array_equal(back.images, b.images)
    np.testing.assert_array_equal(back.token_pieces, b.token_pieces)
    assert back.inference_step == 7 and back.prompt.tolist() == [PROMPT]


def test_reduced_capture_bundle(policy, tmp_path):
    opts = CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16")
    res = policy.infer(make_obs(6), capture=opts)  # capture options imply the bundle
    b = res["attention_bundle"]
    assert b.attention.shape == (10, policy.config.llm.depth, 1, 1, 1, 50, 816) and b.attention.dtype == np.float16
    assert (b.attention_heads, b.attention_queries, b.attention_keys) == ("max", "actions", "prefix")
    assert (b.attention[..., 512:768] == 0).all()
    back = load_bundle(save_bundle(b, tmp_path / "small.npz"))
    assert back.layout.num_keys == 816 and back.layout.num_queries == 50


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda o: o.pop("observation/wrist_image"), ObservationError, "observation/wrist_image"),
        (lambda o: o.pop("observation/state"), ObservationError, "observation/state"),
        (lambda o: o.pop("prompt"), ObservationError, "default_prompt"),
        (lambda o: o.update(prompt=3), ObservationError, "str"),
        (lambda o: o.update({"observation/image": np.zeros((224, 224, 3), np.int64)}), ValueError, "uint8"),
        (lambda o: o.update({"observation/image": np.zeros((224, 224), np.uint8)}), ValueError, r"\[H, W, 3\]"),
        (lambda o: o.update({"observation/state": np.full(8, np.nan)}), ValueError, "NaN"),
        (lambda o: o.update({"observation/state": np.zeros((2, 4))}), ValueError, "1-d"),
        (lambda o: o.update({"observation/state": np.zeros(9)}), ValueError, "norm stats cover 8"),
        (lambda o: o.update({"observation/state": np.array(["a"] * 8)}), ObservationError, "float"),
    ],
)
def test_invalid_observations_fail_clearly(policy, change, error, match):
    obs = make_obs()
    change(obs)
    with pytest.raises(error, match=match):
        policy.infer(obs)


def test_other_errors(policy, tiny):
    with pytest.raises(ObservationError, match="dict"):
        policy.infer([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.infer(make_obs(), noise=np.zeros((10, 32)))
    obs = make_obs()
    del obs["prompt"]
    with_default = Policy(tiny.params, tiny.config,
                          make_transforms(tiny.config, tiny.tokenizer, STATS, default_prompt=PROMPT))
    assert with_default.prepare(obs).prompt == PROMPT
    with pytest.raises(CheckpointError, match="'std'"):
        make_transforms(tiny.config, tiny.tokenizer, {"state": {"mean": [0.0]}, "actions": STATS["actions"]})
    small = type(tiny.config)(**{**tiny.config.__dict__, "vocab_size": 100})
    with pytest.raises(ValueError, match="tokenizer"):
        Policy(tiny.params, small, make_transforms(small, PromptTokenizer.bundled(), STATS))
    assert "UNTRAINED" in tiny.description
