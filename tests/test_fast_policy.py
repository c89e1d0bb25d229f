"""The pi0-FAST policy (pi0viz.policy.fast_policy) with the real tiny JAX pi0-FAST: openpi's pi0_fast_libero inputs
(prompt text, masks), the decoding bundle, the output chain on ids built here, checkpoints, and the policy spec."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from pi0viz.core.decode_bundle import DecodeBundle, load_decode_bundle, save_decode_bundle
from pi0viz.errors import ConfigError
from pi0viz.model import save_params
from pi0viz.policy.fast_policy import FastPolicy
from pi0viz.policy.fast_tokenizer import TINY_FAST_TOKENIZER, FastActionTokenizer, fast_to_paligemma
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.policy.spec import PolicySpecError, check_options, load_policy, parse_policy_spec
from pi0viz.policy.tokenizer import BUNDLED_MODEL, PromptTokenizer

EPS = 1e-6  # openpi's quantile normalization epsilon


@pytest.fixture(scope="module")
def policy() -> FastPolicy:
    return FastPolicy.tiny(seed=0)


@pytest.fixture(scope="module")
def obs() -> dict:
    return load_libero_frames()[0].observation()


def normalized(state: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    return (state - q01) / (q99 - q01 + EPS) * 2 - 1


def unnormalized(x: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    return (x + 1) / 2 * (q99 - q01 + EPS) + q01


def test_inputs_are_openpis_pi0_fast_libero(policy: FastPolicy, obs: dict) -> None:
    data = policy.prepare(obs)
    state = np.asarray(obs["observation/state"], np.float64)
    bins = np.digitize(normalized(state, -1.0, 1.0), np.linspace(-1, 1, 257)[:-1]) - 1  # openpi's 256 bins
    prompt = obs["prompt"].lower().strip().replace("_", " ")
    text = f"Task: {prompt}, State: {' '.join(map(str, bins))};\n"
    ids, mask = data["tokenized_prompt"], data["tokenized_prompt_mask"]
    n = int(mask.sum())
    assert ids[0] == policy.tokenizer.bos_id and list(ids[1:n]) == policy.tokenizer.encode_text(text)
    assert not mask[n:].any() and (ids[n:] == 0).all() and (data["token_ar_mask"] == 0).all()
    assert ids.shape == (policy.config.max_token_len,)
    # No camera masked (openpi's FAST policies): the absent right wrist is black but attended.
    assert data["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": True}
    assert not data["image"]["right_wrist_0_rgb"].any()
    np.testing.assert_array_equal(data["image"]["base_0_rgb"], obs["observation/image"])
    assert data["state"].shape == (8,)  # no padding for pi0-FAST


def test_untrained_tiny_gives_openpis_zero_fallback_and_a_decoding_bundle(policy: FastPolicy, obs: dict,
                                                                          tmp_path: Path) -> None:
    out = policy.infer(obs, return_bundle=True, inference_step=3)
    bundle = out["attention_bundle"]
    assert isinstance(bundle, DecodeBundle) and bundle.inference_step == 3
    generated = bundle.generated_ids[0]
    text = policy.tokenizer.decode(generated)
    assert "Action: " not in text  # random weights: openpi's extract_actions returns zeros
    # zeros -> quantile unnormalize (identity stats) -> pi0_fast_libero's delta quirk adds the state to dims 0-5.
    state = np.asarray(obs["observation/state"], np.float64)
    model_state = unnormalized(normalized(state, -1.0, 1.0), -1.0, 1.0)
    expect = np.tile(unnormalized(np.zeros(7), -1.0, 1.0), (10, 1))
    expect[:, :6] += model_state[:6]
    np.testing.assert_allclose(out["actions"], expect.astype(np.float32), atol=1e-6)
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (10, 7)
    # The bundle: one row per decode step run, over the aligned prefix and the generated tokens.
    config = policy.config
    j = len(generated)
    assert 1 <= j <= config.max_decoding_steps
    assert bundle.attention.shape == (j, config.llm.depth, 1, 1, config.llm.num_heads, 1, config.prefix_len + j)
    np.testing.assert_allclose(bundle.attention.sum(-1), 1.0, atol=1e-5)
    data = policy.prepare(obs)
    np.testing.assert_array_equal(bundle.token_ids[0], data["tokenized_prompt"])
    assert bundle.image_masks.all() and bundle.prompt[0] == obs["prompt"]
    assert bundle.pieces()[0] == policy.piece(int(generated[0]))
    path = save_decode_bundle(bundle, tmp_path / "call.npz")
    np.testing.assert_array_equal(load_decode_bundle(path).attention, bundle.attention)


def generated_sequence(policy: FastPolicy, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Generated ids "Action: " + FAST ids + "|" + EOS whose FAST part decodes to exactly H x D coefficients and
    survives openpi's text round trip (decode, cut between "Action: " and "|", strip, re-encode): built token by token
    from FAST tokens whose ids keep their place. Returns (generated ids, the FAST tokens)."""
    tok, fast = policy.tokenizer, policy.fast_tokenizer
    vocab, need = tok.vocab_size, policy.config.action_horizon * policy.config.action_dim
    head, tail = tok.encode_text("Action: "), [*tok.encode_text("|"), 1]

    def survives(tokens: list[int]) -> bool:
        ids = [int(i) for i in fast_to_paligemma(tokens, vocab)]
        body = tok.decode(np.asarray([*head, *ids, *tail])).split("Action: ")[1].split("|")[0].strip()
        return tok.encode_text(body) == ids

    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for _ in range(20000):
        t = int(rng.integers(0, fast.bpe.get_vocab_size()))
        text = fast.bpe.decode(chosen + [t])
        if "\ufffd" not in text and len(text) <= need and survives(chosen + [t]):
            chosen.append(t)
            if len(text) == need:
                ids = fast_to_paligemma(chosen, vocab).tolist()
                return np.asarray([*head, *ids, *tail]), chosen
    raise AssertionError("no FAST token sequence survived the text round trip")


def test_output_chain_decodes_generated_ids_built_here(policy: FastPolicy) -> None:
    """Generated ids built here -> the coefficients their FAST tokens spell, inverse DCT (a direct cosine basis),
    unnormalized, + the state on dims 0-5; a sequence cut short gives openpi's zeros and the reason."""
    fast = policy.fast_tokenizer
    generated, tokens = generated_sequence(policy)
    state = np.linspace(-0.5, 0.5, 8)
    actions, decoding = policy.postprocess(generated, state)
    assert decoding.ok, decoding.error
    np.testing.assert_array_equal(decoding.fast_tokens, tokens)
    coefficients = np.array([ord(c) for c in fast.bpe.decode(tokens)]).reshape(10, 7) + fast.min_token
    basis = np.cos(np.pi * (2 * np.arange(10)[None] + 1) * np.arange(10)[:, None] / 20) * np.sqrt(2 / 10)
    basis[0] /= np.sqrt(2)  # orthonormal DCT-II rows
    expect = unnormalized(basis.T @ (coefficients / fast.scale), -1.0, 1.0)
    expect[:, :6] += unnormalized(state, -1.0, 1.0)[:6]
    np.testing.assert_allclose(actions, expect.astype(np.float32), atol=1e-5)
    short, bad = policy.postprocess(np.concatenate([generated[:-4], generated[-2:]]), state)
    assert not bad.ok and "coefficients" in bad.error
    np.testing.assert_allclose(short[:, 6], unnormalized(np.zeros(10), -1.0, 1.0), atol=1e-6)


@pytest.fixture(scope="module")
def checkpoint(policy: FastPolicy, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fast_ckpt")
    save_params(policy.params, root / "params")
    stats = {"state": {"mean": [0.0] * 8, "std": [1.0] * 8, "q01": [-2.0] * 8, "q99": [3.0] * 8},
             "actions": {"mean": [0.0] * 7, "std": [1.0] * 7, "q01": [-0.5] * 7, "q99": [0.5] * 7}}
    folder = root / "assets" / "physical-intelligence" / "libero"
    folder.mkdir(parents=True)
    (folder / "norm_stats.json").write_text(json.dumps({"norm_stats": stats}))
    return root


def test_checkpoint_loads_with_its_stats_and_tokenizers(policy: FastPolicy, checkpoint: Path, obs: dict) -> None:
    loaded = FastPolicy.from_checkpoint(checkpoint, config=policy.config, tokenizer_path=BUNDLED_MODEL,
                                        fast_tokenizer_path=TINY_FAST_TOKENIZER, dtype="float32")
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(policy.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    data = loaded.prepare(obs)
    state = np.asarray(obs["observation/state"], np.float64)
    np.testing.assert_allclose(data["state"], normalized(state, -2.0, 3.0))
    # The output chain uses the checkpoint's stats: zeros (no "Action: ") -> its action quantiles, + its state.
    actions, decoding = loaded.postprocess(np.asarray([1]), data["state"])
    assert not decoding.ok
    expect = np.tile(unnormalized(np.zeros(7), -0.5, 0.5), (10, 1))
    expect[:, :6] += unnormalized(normalized(state, -2.0, 3.0), -2.0, 3.0)[:6]
    np.testing.assert_allclose(actions, expect.astype(np.float32), atol=1e-5)
    assert "pi0-FAST checkpoint" in loaded.description


def test_checkpoint_faults_are_one_line(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    # The full-size config with the bundled tokenizer: the FAST ids would land on the wrong pieces.
    with pytest.raises(ConfigError, match="last ids of the prompt tokenizer's vocabulary"):
        FastPolicy.from_checkpoint(checkpoint, tokenizer_path=BUNDLED_MODEL, fast_tokenizer_path=TINY_FAST_TOKENIZER)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="--fast-tokenizer"):
        FastPolicy.from_checkpoint(checkpoint, tokenizer_path=BUNDLED_MODEL)
    with pytest.raises(ConfigError, match="lacks"):
        FastPolicy.from_checkpoint(checkpoint, tokenizer_path=BUNDLED_MODEL, fast_tokenizer_path=tmp_path)


def test_hf_cache_copy_is_found_without_downloading(checkpoint: Path, policy: FastPolicy, tmp_path: Path,
                                                    monkeypatch) -> None:
    snapshot = tmp_path / "hub" / "models--physical-intelligence--fast" / "snapshots" / "abc123"
    FastActionTokenizer.from_path(TINY_FAST_TOKENIZER).save(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = FastPolicy.from_checkpoint(checkpoint, config=policy.config, tokenizer_path=BUNDLED_MODEL,
                                        dtype="float32")
    assert "abc123" in loaded.fast_tokenizer.name


def test_policy_spec_builds_and_refuses(policy: FastPolicy) -> None:
    tiny = load_policy("tiny", config="pi0_fast_libero")
    assert isinstance(tiny, FastPolicy) and tiny.bundle_format == "pi0viz.capture/2"
    with pytest.raises(PolicySpecError, match="FAST tokenizer goes with"):
        check_options(parse_policy_spec("tiny"), config="pi0_fast_libero", fast_tokenizer="x")
    with pytest.raises(PolicySpecError, match="FAST tokenizer goes with"):
        check_options(parse_policy_spec("checkpoint:x"), config="pi0_libero", fast_tokenizer="x")
    check_options(parse_policy_spec("checkpoint:x"), config="pi0_fast_libero", fast_tokenizer="x")
    assert PromptTokenizer.bundled().vocab_size == policy.config.vocab_size


def test_libero_example_runs_pi0_fast_and_renders_its_decoding_bundles(example, policy: FastPolicy, obs: dict,
                                                                       tmp_path: Path) -> None:
    args = example.parse_args(["--policy", "tiny", "--config", "pi0_fast_libero", "--save-bundles",
                               "--render-steps", "0", "--render-layers", "0"])
    chunk_policy = example.make_policy(args)
    assert isinstance(chunk_policy.policy, FastPolicy)
    out = chunk_policy.infer(obs, return_attention=True, inference_step=2, fuse_heads=False)
    assert out["actions"].shape == (10, 7) and out["attention_bundle"].inference_step == 2
    example.render_call(out["attention_bundle"], tmp_path, args)
    saved = load_decode_bundle(tmp_path / "bundles" / "inference_002.npz")
    np.testing.assert_array_equal(saved.generated_ids, out["attention_bundle"].generated_ids)
    cell = tmp_path / "inference_timestep_2" / "decode_step_0" / "layer_0"
    assert (cell / "fused_attention_on_base_0_rgb.jpg").stat().st_size > 0
    assert [p.name for p in (tmp_path / "inference_timestep_2").iterdir()] == ["decode_step_0"]
    with pytest.raises(PolicySpecError, match="FAST tokenizer goes with"):
        example.policy_spec(example.Args(policy="tiny", config="pi0_fast_libero", fast_tokenizer=str(tmp_path)))
