"""The small policy transforms one by one on constructed inputs, their composition, and the composed LIBERO chains
on the shipped LIBERO frames against values computed here by hand from the documented formulas (numpy only: no
model runs in this module)."""

from __future__ import annotations

import numpy as np
import pytest

from pi0viz.errors import CheckpointError, ConfigError, ObservationError
from pi0viz.policy.configs import CONFIGS, PIPELINES, make_transforms
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.policy.transforms import (
    AbsoluteActions,
    Chain,
    InjectDefaultPrompt,
    LeRobotInputs,
    LiberoInputs,
    NormalizeState,
    PadState,
    PolicyInputs,
    PolicyTransforms,
    ResizeImagesWithPad,
    SliceActions,
    TokenizePrompt,
    UnnormalizeActions,
    compose,
)

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
STATE = {"mean": np.array([-0.05, 0.03, 1.0, 2.97, -0.1, 0.05, 0.03, -0.03]),
         "std": np.array([0.1, 0.15, 0.1, 0.3, 0.5, 0.3, 0.01, 0.01]),
         "q01": np.array([-0.4, -0.3, 0.8, 2.0, -1.0, -0.5, 0.0, -0.04]),
         "q99": np.array([0.3, 0.4, 1.3, 3.5, 1.0, 0.6, 0.04, 0.0])}
ACTIONS = {"mean": np.array([0.06, 0.09, -0.1, -2.97, 0.0, 0.01, -0.3]),
           "std": np.array([0.3, 0.35, 0.45, 0.04, 0.07, 0.08, 0.95]),
           "q01": np.array([-0.9, -0.9, -0.9, -0.2, -0.3, -0.3, -1.0]),
           "q99": np.array([0.9, 0.9, 0.9, 0.2, 0.3, 0.3, 1.0])}
STATS = {"state": STATE, "actions": ACTIONS}


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.bundled()


# -- one transform at a time --------------------------------------------------------------------------------------


def test_resize_with_pad_keeps_the_aspect_and_pads_with_zeros():
    wide = np.full((100, 200, 3), 200, dtype=np.uint8)  # 1:2 -> 112 x 224, centered: 56 black rows above and below
    tall = np.full((300, 150, 3), 90, dtype=np.uint8)  # 2:1 -> 224 x 112: 56 black columns left and right
    square = np.arange(224 * 224 * 3, dtype=np.uint64).reshape(224, 224, 3).astype(np.uint8)
    out = ResizeImagesWithPad(224, 224)({"image": {"a": wide, "b": tall, "c": square}})["image"]
    assert all(img.shape == (224, 224, 3) and img.dtype == np.uint8 for img in out.values())
    assert not out["a"][:56].any() and not out["a"][168:].any()
    assert (out["a"][56:168] == 200).all()  # a constant image stays constant under bilinear scaling
    assert not out["b"][:, :56].any() and not out["b"][:, 168:].any() and (out["b"][:, 56:168] == 90).all()
    np.testing.assert_array_equal(out["c"], square)  # 224 x 224 passes untouched


def test_libero_inputs_map_the_cameras_and_black_out_the_missing_one():
    rng = np.random.default_rng(0)
    obs = {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
           "observation/wrist_image": rng.random((3, 64, 64)).astype(np.float32),  # float CHW in [0, 1]
           "observation/state": [0.1] * 8, "prompt": b"pick it up"}
    out = LiberoInputs(CAMERAS)(dict(obs))
    assert list(out["image"]) == list(CAMERAS)
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], obs["observation/image"])
    wrist = out["image"]["left_wrist_0_rgb"]
    assert wrist.shape == (64, 64, 3) and wrist.dtype == np.uint8  # HWC uint8, resized later in the chain
    assert out["image"]["right_wrist_0_rgb"].shape == (224, 224, 3) and not out["image"]["right_wrist_0_rgb"].any()
    assert out["state"].dtype == np.float64 and out["prompt"] == "pick it up"
    one_camera = LiberoInputs(("base_0_rgb",))(dict(obs))  # reach-tiny: the agentview only
    assert list(one_camera["image"]) == ["base_0_rgb"]
    with pytest.raises(ObservationError, match="observation/wrist_image"):
        LiberoInputs(CAMERAS)({k: v for k, v in obs.items() if k != "observation/wrist_image"})


@pytest.mark.parametrize("normalization", ["zscore", "quantile"])
def test_normalize_then_unnormalize_is_the_identity(normalization):
    state = np.array([0.02, -0.1, 1.1, 3.1, 0.4, -0.2, 0.021, -0.019])
    normalized = NormalizeState(STATE, normalization)({"state": state.copy()})["state"]
    if normalization == "zscore":
        want = ((state - STATE["mean"]) / (STATE["std"] + 1e-6)).astype(np.float32).astype(np.float64)
    else:
        want = (state - STATE["q01"]) / (STATE["q99"] - STATE["q01"] + 1e-6) * 2 - 1
    np.testing.assert_array_equal(normalized, want)
    back = UnnormalizeActions(STATS, normalization)({"state": normalized})["state"]
    # z-score passes float32 (the model's input dtype) on the way: back to ~1e-7 relative
    np.testing.assert_allclose(back, state, rtol=2e-7 if normalization == "zscore" else 1e-12, atol=1e-12)


def test_unnormalize_pads_the_stats_to_the_model_width():
    model = np.random.default_rng(1).normal(size=(5, 32))
    z = UnnormalizeActions(STATS, "zscore")({"actions": model})["actions"]
    np.testing.assert_array_equal(z[:, :7], model[:, :7] * (ACTIONS["std"] + 1e-6) + ACTIONS["mean"])
    np.testing.assert_array_equal(z[:, 7:], model[:, 7:] * (1 + 1e-6))  # mean 0 / std 1 past the stats
    q = UnnormalizeActions(STATS, "quantile")({"actions": model})["actions"]
    np.testing.assert_array_equal(q[:, :7], (model[:, :7] + 1) / 2 * (ACTIONS["q99"] - ACTIONS["q01"] + 1e-6)
                                  + ACTIONS["q01"])
    np.testing.assert_array_equal(q[:, 7:], model[:, 7:])  # quantile: dims past the stats untouched


def test_pad_and_slice_shapes():
    padded = PadState(32)({"state": np.arange(8, dtype=np.float64)})["state"]
    assert padded.shape == (32,) and padded.dtype == np.float64
    np.testing.assert_array_equal(padded[:8], np.arange(8))
    assert not padded[8:].any()
    with pytest.raises(ObservationError, match="at most 4"):
        PadState(4)({"state": np.zeros(8)})
    actions = np.random.default_rng(2).normal(size=(50, 32))
    sliced = SliceActions(7)({"actions": actions})["actions"]
    assert sliced.shape == (50, 7) and sliced.dtype == np.float32
    np.testing.assert_array_equal(sliced, actions[:, :7].astype(np.float32))


def test_absolute_actions_add_the_state_to_the_first_dims_only():
    actions, state = np.ones((3, 8)), np.arange(8, dtype=np.float64)
    out = AbsoluteActions(6)({"actions": actions.copy(), "state": state})["actions"]
    np.testing.assert_array_equal(out[:, :6], np.broadcast_to(1 + state[:6], (3, 6)))
    np.testing.assert_array_equal(out[:, 6:], np.ones((3, 2)))  # the gripper and the padding are left alone


def test_tokenizer_pads_to_the_prompt_slots(tokenizer):
    prompt = "put_the bowl on the plate\n"
    out = TokenizePrompt(tokenizer, 48)({"prompt": prompt, "state": np.zeros(8)})
    ids, mask = out["tokenized_prompt"], out["tokenized_prompt_mask"]
    real = [tokenizer.bos_id, *tokenizer._sp.encode("put the bowl on the plate"), *tokenizer._sp.encode("\n")]
    assert ids.shape == mask.shape == (48,) and ids.dtype == np.int32 and mask.dtype == bool
    assert ids[: len(real)].tolist() == real and mask[: len(real)].all()
    assert not ids[len(real):].any() and not mask[len(real):].any()  # pad id 0, mask False
    assert out["prompt"] == prompt  # the text stays for the bundle
    with_state = TokenizePrompt(tokenizer, 200, discrete_state_input=True)(
        {"prompt": prompt, "state": np.array([0.0, -1.0, 1.0])})
    text = tokenizer.decode(with_state["tokenized_prompt"], with_state["tokenized_prompt_mask"])
    assert text.startswith("Task: put the bowl on the plate, State: 128 0 255;\nAction:")
    with pytest.raises(ObservationError, match="default_prompt"):
        TokenizePrompt(tokenizer, 48)({"state": np.zeros(8)})


def test_default_prompt_only_fills_a_missing_prompt():
    assert InjectDefaultPrompt("wipe")({})["prompt"] == "wipe"
    assert InjectDefaultPrompt("wipe")({"prompt": "stack"})["prompt"] == "stack"
    assert "prompt" not in InjectDefaultPrompt(None)({})


def test_quantile_transforms_need_q01_q99():
    bare = {"mean": np.zeros(7), "std": np.ones(7)}
    with pytest.raises(ConfigError, match="q01 and q99"):
        NormalizeState(bare, "quantile")
    with pytest.raises(ConfigError, match="q01 and q99"):
        UnnormalizeActions({"state": bare, "actions": bare}, "quantile")
    with pytest.raises(ConfigError, match="'zscore' or 'quantile'"):
        NormalizeState(bare, "minmax")


def test_lerobot_inputs_map_the_request_to_lerobot_keys():
    image = np.full((224, 224, 3), 255, dtype=np.uint8)
    request = {"observation/image": image, "observation/wrist_image": image // 3, "observation/state": [0.5] * 8,
               "prompt": "open the drawer"}
    out = LeRobotInputs(("observation.images.image", "observation.images.image2"))(dict(request))
    assert list(out) == ["observation.images.image", "observation.images.image2", "observation.state", "task"]
    assert out["observation.images.image"].shape == (3, 224, 224) and (out["observation.images.image"] == 1).all()
    np.testing.assert_allclose(out["observation.images.image2"], 85 / 255, rtol=1e-6)
    assert out["observation.state"].dtype == np.float32 and out["task"] == "open the drawer"
    with pytest.raises(ObservationError, match="prompt"):
        LeRobotInputs(("a", "b"))({k: v for k, v in request.items() if k != "prompt"})


# -- composition --------------------------------------------------------------------------------------------------


def test_compose_flattens_skips_none_and_leaves_the_callers_dict_alone():
    inner = compose(InjectDefaultPrompt("a"), None)
    chain = compose(inner, PadState(4), None, SliceActions(2))
    assert isinstance(chain, Chain) and len(chain) == 3
    assert chain.names() == ["InjectDefaultPrompt", "PadState", "SliceActions"]
    assert chain.find(PadState) == PadState(4) and chain.find(TokenizePrompt) is None
    given = {"state": np.ones(2), "actions": np.ones((1, 3))}
    out = chain(given)
    assert set(given) == {"state", "actions"} and given["state"].shape == (2,)  # untouched
    assert out["prompt"] == "a" and out["state"].shape == (4,) and out["actions"].shape == (1, 2)


def test_every_named_config_has_a_pipeline_and_the_chains_follow_it(tokenizer):
    assert set(CONFIGS) <= set(PIPELINES) and "reach_tiny" in PIPELINES
    for name, config in CONFIGS.items():
        t = make_transforms(config.model, tokenizer, STATS, pipeline=name)
        assert isinstance(t, PolicyTransforms) and t.tokenizer is tokenizer and t.action_dims == 7
        assert t.inputs.names() == ["LiberoInputs", "NormalizeState", "InjectDefaultPrompt", "ResizeImagesWithPad",
                                    "TokenizePrompt", "PadState"]
        assert t.outputs.names() == (["UnnormalizeActions", "AbsoluteActions", "SliceActions"] if name == "pi0_libero"
                                     else ["UnnormalizeActions", "SliceActions"])
        assert t.inputs.find(NormalizeState).normalization == ("quantile" if config.model.pi05 else "zscore")
        assert t.inputs.find(TokenizePrompt).discrete_state_input == (name == "pi05_base")
    model = CONFIGS["pi0_libero"].model
    with pytest.raises(ConfigError, match="pipeline"):
        make_transforms(model, tokenizer, STATS, pipeline="pi0_libro")
    with pytest.raises(ConfigError, match=">= 6"):
        make_transforms(model, tokenizer, STATS, action_dims=5)
    with pytest.raises(CheckpointError, match="'std'"):
        make_transforms(model, tokenizer, {"state": {"mean": [0.0]}, "actions": ACTIONS})


# -- the composed LIBERO chains on the shipped frames --------------------------------------------------------------


def _expected_images(obs: dict) -> dict[str, np.ndarray]:
    from pi0viz.core.images import resize_with_pad

    return {"base_0_rgb": resize_with_pad(obs["observation/image"], 224, 224),
            "left_wrist_0_rgb": resize_with_pad(obs["observation/wrist_image"], 224, 224),
            "right_wrist_0_rgb": np.zeros((224, 224, 3), np.uint8)}


@pytest.mark.parametrize("name", ["pi0_libero", "pi05_libero"])
def test_composed_libero_chain_on_the_shipped_frames(tokenizer, name):
    """Inputs and outputs of the full chains, computed here by hand from the documented steps (docs/policy.md)."""
    config = CONFIGS[name]
    model = config.tiny_model_config(tokenizer.vocab_size)  # the config's token layout, tiny shape
    chains = make_transforms(model, tokenizer, STATS, pipeline=name)
    rng = np.random.default_rng(3)
    frames = load_libero_frames()
    assert len(frames) >= 2
    for frame in frames:
        obs = frame.observation()
        got = PolicyInputs.from_data(chains.inputs(obs))
        want_images = _expected_images(obs)
        assert list(got.images) == list(CAMERAS)
        for cam in CAMERAS:
            np.testing.assert_array_equal(got.images[cam], want_images[cam])
        assert got.image_masks == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
        s = np.asarray(obs["observation/state"], dtype=np.float64)
        if name == "pi0_libero":  # z-score, through float32
            norm = ((s - STATE["mean"]) / (STATE["std"] + 1e-6)).astype(np.float32)
        else:  # quantile in float64, then the model's float32
            norm = ((s - STATE["q01"]) / (STATE["q99"] - STATE["q01"] + 1e-6) * 2 - 1).astype(np.float32)
        want_state = np.zeros(32, np.float32)
        want_state[:8] = norm
        np.testing.assert_array_equal(got.state, want_state)
        assert got.state.dtype == np.float32
        T = model.max_token_len
        cleaned = obs["prompt"].strip().replace("_", " ").replace("\n", " ")
        real = [tokenizer.bos_id, *tokenizer._sp.encode(cleaned), *tokenizer._sp.encode("\n")]
        want_ids = np.zeros(T, np.int32)
        want_ids[: len(real)] = real
        np.testing.assert_array_equal(got.token_ids, want_ids)
        np.testing.assert_array_equal(got.token_mask, np.arange(T) < len(real))
        np.testing.assert_array_equal(got.raw_state, s)
        assert got.prompt == obs["prompt"]

        model_actions = rng.normal(size=(model.action_horizon, 32)).astype(np.float32)
        out = chains.outputs({"actions": model_actions, "state": got.state})["actions"]
        a = model_actions[:, :7].astype(np.float64)
        if name == "pi0_libero":  # z-score back, then the delta quirk with the model-input state in robot units
            want = a * (ACTIONS["std"] + 1e-6) + ACTIONS["mean"]
            state_back = got.state[:6].astype(np.float64) * (STATE["std"][:6] + 1e-6) + STATE["mean"][:6]
            want[:, :6] += state_back
        else:
            want = (a + 1) / 2 * (ACTIONS["q99"] - ACTIONS["q01"] + 1e-6) + ACTIONS["q01"]
        assert out.shape == (model.action_horizon, 7) and out.dtype == np.float32
        np.testing.assert_array_equal(out, want.astype(np.float32))


def test_the_chain_refuses_bad_requests_with_one_line(tokenizer):
    chains = make_transforms(CONFIGS["pi0_libero"].model, tokenizer, STATS)
    obs = load_libero_frames()[0].observation()
    for change, match in [
        ({"observation/state": np.zeros(9)}, "norm stats cover 8"),
        ({"observation/state": np.full(8, np.nan)}, "NaN"),
        ({"observation/state": np.full(8, 1e39)}, "overflows float32"),
        ({"prompt": 3}, "must be a str"),
        ({"observation/image": np.zeros((224, 224), np.uint8)}, r"\[H, W, 3\]"),
    ]:
        with pytest.raises((ObservationError, ValueError), match=match) as err:
            chains.inputs({**obs, **change})
        assert "\n" not in str(err.value)
    with pytest.raises(ObservationError, match="dict"):
        chains.inputs([1, 2])  # type: ignore[arg-type]
