"""The prefix's own attention (pi0viz.causal.prefix, core.prefix_bundle, render.prefix): the side file's blocks are
the model's prefix-pass probabilities (max over heads, float16), capturing them leaves the actions unchanged, the
file round-trips and refuses what it is not, and the tree draws each prompt token's and each image region's map
where the data says, in its own folder."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pi0viz.core.prefix_bundle import PREFIX_FORMAT, PrefixAttention, load_prefix, prefix_path, save_prefix
from pi0viz.errors import BundleError


@pytest.fixture(scope="module")
def captured():
    import jax

    from pi0viz.causal.observation import shipped_observation
    from pi0viz.causal.prefix import capture_prefix
    from pi0viz.core.capture_options import CaptureOptions
    from pi0viz.model.pi0 import sample_actions
    from pi0viz.policy.jax_policy import to_observation
    from pi0viz.policy.reach_model import load_reach_policy

    policy = load_reach_policy()
    inputs = policy.prepare(shipped_observation("reach-tiny")[0])
    noise = np.random.default_rng(0).standard_normal((1, 10, 8)).astype(np.float32)
    obs = to_observation(inputs)
    full = sample_actions(policy.params, policy.config, jax.random.key(0), obs, noise=noise,
                          capture=CaptureOptions(prefix=True))  # every head, float32
    plain = sample_actions(policy.params, policy.config, jax.random.key(0), obs, noise=noise)
    return policy, inputs, capture_prefix(policy, inputs, noise=noise[0]), full, plain


def test_blocks_are_the_prefix_pass_probabilities_and_the_actions_do_not_change(captured) -> None:
    policy, inputs, prefix, full, plain = captured
    np.testing.assert_array_equal(np.asarray(full.actions), np.asarray(plain.actions))  # capture changes nothing
    att = np.asarray(full.prefix_attention)[:, 0]  # [L, K, G, P, P]
    truth = att.reshape(att.shape[0], -1, *att.shape[-2:]).max(axis=1)  # max over the query heads
    n = policy.config.num_image_tokens
    np.testing.assert_allclose(prefix.image_to_prompt.astype(np.float32), truth[:, :n, n:], atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(prefix.image_to_image.astype(np.float32), truth[:, :n, :n], atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(prefix.prompt_to_image.astype(np.float32), truth[:, n:, :n], atol=1e-3, rtol=1e-3)
    assert prefix.image_to_prompt.dtype == np.float16 and prefix.image_to_image.shape == (4, 256, 256)
    valid = np.asarray(inputs.token_mask)
    assert (prefix.image_to_prompt[..., ~valid] == 0).all()  # pads are masked keys
    assert (prefix.image_to_prompt[..., valid].astype(np.float32).sum(-1) > 0).all()  # every image token reads it
    assert prefix.camera_names == ["base_0_rgb"] and prefix.prompt == "reach the alphabet soup"
    assert "soup" in "".join(prefix.token_pieces)


def test_the_side_file_round_trips_and_refuses_what_it_is_not(captured, tmp_path) -> None:
    prefix = captured[2]
    assert prefix_path(tmp_path / "inference_003.npz") == tmp_path / "inference_003.prefix.npz"
    path = save_prefix(prefix, prefix_path(tmp_path / "inference_003.npz"))
    back = load_prefix(path)
    for name in ("image_to_prompt", "image_to_image", "prompt_to_image", "images", "token_mask", "layer_indices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(prefix, name))
    assert back.camera_names == prefix.camera_names and back.patch_grid == (16, 16) and back.inference_step is None
    arrays = dict(np.load(path, allow_pickle=False))
    assert str(arrays["format"]) == PREFIX_FORMAT
    from pi0viz.core.runs import bundle_format

    assert bundle_format(path) == PREFIX_FORMAT  # what core.runs reads to recognise a side file
    with pytest.raises(BundleError, match="format 'x'"):
        PrefixAttention.from_arrays({**arrays, "format": np.asarray("x")})
    with pytest.raises(BundleError, match="image_to_prompt"):
        PrefixAttention.from_arrays({**arrays, "image_to_prompt": arrays["image_to_prompt"][:, :10]})


def _jpeg(path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        return np.asarray(img.convert("L"), np.float32)


def test_the_tree_draws_each_map_where_the_data_says(tmp_path) -> None:
    """A synthetic file with one hot patch per prompt token and one hot prompt token per region: the hot patch is
    the brightest block of its image; the tree is prefix_attention/... only."""
    from pi0viz.render.prefix import render_prefix

    rng = np.random.default_rng(0)
    grid, t = (4, 4), 3
    image = np.full((2, 56, 56, 3), 60, np.uint8)
    l, n = 2, 16
    p2i = np.zeros((l, t, 2 * n), np.float16)
    p2i[1, 0, n + 5] = 0.9  # layer 1, prompt token 0 reads patch (1, 1) of camera 1
    i2p = np.zeros((l, 2 * n, t), np.float16)
    i2p[1, :, 2] = 0.5  # every image token reads prompt token 2
    prefix = PrefixAttention(["base_0_rgb", "left_wrist_0_rgb"], image, np.array([True, True]),
                             np.array(["a", "b", "c"]), np.array([True, True, True]), grid, np.array([0, 1]),
                             i2p, rng.uniform(size=(l, 2 * n, 2 * n)).astype(np.float16), p2i, prompt="a b c")
    files = render_prefix(prefix, tmp_path, region=2)
    assert len(files) == l * (t * 2 + 2 * 4)  # per layer: 3 tokens x 2 cameras, 2 cameras x 4 regions
    assert all(f.relative_to(tmp_path).parts[0] == "prefix_attention" for f in files)
    hot = _jpeg(tmp_path / "prefix_attention/inference_timestep_0/layer_1/prompt_token_0/"
                "fused_attention_on_left_wrist_0_rgb.jpg")[:56]
    blocks = hot.reshape(4, 14, 4, 14).mean(axis=(1, 3))
    assert np.unravel_index(blocks.argmax(), blocks.shape) == (1, 1) and blocks[1, 1] > blocks.mean() + 50
    region = tmp_path / "prefix_attention/inference_timestep_0/layer_1/image_region/base_0_rgb_region_0_1"
    assert (region / "fused_attention_on_text.jpg").is_file()
    assert blocks_differ(_jpeg(region / "fused_attention_on_text.jpg"))


def blocks_differ(gray: np.ndarray) -> bool:
    """The text map (top rows) is not one flat colour: the read token stands out."""
    top = gray[:20]
    return float(top.max() - top.min()) > 50
