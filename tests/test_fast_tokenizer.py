"""FAST action tokenization (pi0viz.policy.fast_tokenizer) against ground truth built here: the DCT against a direct
sum of cosines, round trips through a FAST-style BPE trained in the test with `tokenizers`, openpi's id map, and
openpi's text extraction of generated PaliGemma-style ids (zeros, with a reason, when they do not decode)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pi0viz.errors import ConfigError
from pi0viz.policy.fast_tokenizer import (
    TINY_FAST_TOKENIZER,
    FastActionTokenizer,
    dct,
    dct_matrix,
    extract_actions,
    fast_to_paligemma,
    idct,
    paligemma_to_fast,
)
from pi0viz.policy.tokenizer import PromptTokenizer

H, D = 10, 7


def smooth_chunk(rng: np.random.Generator, h: int = H, d: int = D) -> np.ndarray:
    """float[h, d] in [-1, 1]: an offset plus a slow sine per dim (what FAST compresses well)."""
    t = np.linspace(0.0, 1.0, h)[:, None]
    wave = np.sin(2 * np.pi * (rng.uniform(0.2, 1.0, (1, d)) * t + rng.uniform(0, 1, (1, d))))
    return np.clip(rng.uniform(-0.8, 0.8, (1, d)) + rng.uniform(-0.5, 0.5, (1, d)) * wave, -1, 1)


@pytest.fixture(scope="module")
def trained() -> FastActionTokenizer:
    rng = np.random.default_rng(1)
    return FastActionTokenizer.fit([smooth_chunk(rng) for _ in range(800)], scale=10.0, vocab_size=400)


def direct_dct(x: np.ndarray) -> np.ndarray:
    """The orthonormal DCT-II written as its sum: X_k = s_k sum_t x_t cos(pi (2t + 1) k / 2n)."""
    n = x.shape[0]
    out = np.zeros_like(x, dtype=np.float64)
    for k in range(n):
        s = math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)
        for t in range(n):
            out[k] += s * x[t] * math.cos(math.pi * (2 * t + 1) * k / (2 * n))
    return out


def test_dct_is_the_sum_of_cosines_and_idct_inverts_it() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 10, 17):
        x = rng.normal(size=(n, 3))
        np.testing.assert_allclose(dct(x), direct_dct(x), atol=1e-12)
        np.testing.assert_allclose(idct(dct(x)), x, atol=1e-12)
        m = dct_matrix(n)
        np.testing.assert_allclose(m @ m.T, np.eye(n), atol=1e-12)  # orthonormal (scipy's norm="ortho")


def test_round_trip_equals_the_quantized_dct(trained: FastActionTokenizer) -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        chunk = smooth_chunk(rng)
        tokens = trained.encode(chunk)
        assert all(0 <= t < trained.vocab_size for t in tokens)
        assert len(tokens) < H * D  # BPE merged coefficients
        result = trained.decode(tokens, H, D)
        assert result.ok, result.error
        # Ground truth: round(DCT * scale) / scale, inverted by the direct formula's transpose.
        quantized = np.around(direct_dct(chunk) * 10.0) / 10.0
        expect = dct_matrix(H).T @ quantized
        np.testing.assert_allclose(result.actions, expect, atol=1e-12)
        assert np.abs(result.actions - chunk).max() <= 0.05 * math.sqrt(H) + 1e-9  # quantization bound


def test_time_major_flattening(trained: FastActionTokenizer) -> None:
    """The coefficient string is row-major over [H, D] (all dims of coefficient 0 first), as the FAST processor."""
    chunk = np.zeros((H, D))
    chunk[:, 3] = 0.5  # a constant on dim 3 only: one non-zero coefficient, (k=0, d=3)
    text = trained.bpe.decode(trained.encode(chunk))
    values = np.array([ord(c) for c in text]) + trained.min_token
    expect = np.zeros(H * D, int)
    expect[3] = round(0.5 * math.sqrt(H) * 10)
    np.testing.assert_array_equal(values, expect)


def test_malformed_tokens_give_zeros_and_a_reason(trained: FastActionTokenizer) -> None:
    tokens = trained.encode(smooth_chunk(np.random.default_rng(3)))
    short = trained.decode(tokens[:-1], H, D)
    assert not short.ok and "not 10 x 7" in short.error
    np.testing.assert_array_equal(short.actions, np.zeros((H, D)))
    outside = trained.decode([trained.bpe.get_vocab_size() + 5], H, D)
    assert not outside.ok and "outside the FAST vocabulary" in outside.error


def test_id_map_is_openpis() -> None:
    # openpi: paligemma_vocab - 1 - 128 - t; PaliGemma (257152 pieces): FAST 0 -> 257023, and the map inverts itself.
    np.testing.assert_array_equal(fast_to_paligemma([0, 1, 2047], 257152), [257023, 257022, 254976])
    ids = fast_to_paligemma(np.arange(100), 1536)
    np.testing.assert_array_equal(paligemma_to_fast(ids, 1536), np.arange(100))


def test_extract_actions_reads_the_text_between_action_and_bar(trained: FastActionTokenizer) -> None:
    """openpi's extract_actions on generated ids built here: "Action: " + FAST ids + "|" + EOS, decoded as text."""
    prompt_tok = PromptTokenizer.bundled()
    # openpi re-encodes the text, so the ids come back only when the text round trip keeps them: with PaliGemma
    # the FAST ids are mostly single <loc> pieces; with the bundled tokenizer some chunks merge. Take the first that
    # survives (most do).
    for seed in range(4, 60):
        fast = trained.encode(smooth_chunk(np.random.default_rng(seed)))
        ids = fast_to_paligemma(fast, prompt_tok.vocab_size)
        generated = [*prompt_tok.encode_text("Action: "), *ids.tolist(), *prompt_tok.encode_text("|"), 1, 0, 0]
        body = prompt_tok.decode(np.asarray(generated)).split("Action: ")[1].split("|")[0].strip()
        if prompt_tok.encode_text(body) == ids.tolist():
            break
    else:
        raise AssertionError("no chunk's FAST ids survive the bundled tokenizer's text round trip")
    result = extract_actions(generated, prompt_tok, trained, H, D)
    assert result.ok, result.error
    np.testing.assert_array_equal(result.fast_tokens, fast)
    np.testing.assert_allclose(result.actions, trained.decode(fast, H, D).actions, atol=0)
    # No "Action: " -> openpi's zeros, and the reason.
    missing = extract_actions(ids.tolist(), prompt_tok, trained, H, D)
    assert not missing.ok and "no 'Action: '" in missing.error
    np.testing.assert_array_equal(missing.actions, np.zeros((H, D)))
    outside = extract_actions([prompt_tok.vocab_size + 3], prompt_tok, trained, H, D)
    assert not outside.ok and "outside the prompt tokenizer" in outside.error


def test_save_and_load_keep_the_tokenizer(trained: FastActionTokenizer, tmp_path: Path) -> None:
    trained.save(tmp_path / "fast")
    config = json.loads((tmp_path / "fast" / "processor_config.json").read_text())
    assert config["min_token"] == trained.min_token and config["scale"] == 10.0
    loaded = FastActionTokenizer.from_path(tmp_path / "fast")
    chunk = smooth_chunk(np.random.default_rng(5))
    assert loaded.encode(chunk) == trained.encode(chunk)
    np.testing.assert_array_equal(loaded.decode(trained.encode(chunk), H, D).actions,
                                  trained.decode(trained.encode(chunk), H, D).actions)


def test_shipped_tiny_tokenizer_round_trips() -> None:
    tiny = FastActionTokenizer.from_path(TINY_FAST_TOKENIZER)
    assert (tiny.time_horizon, tiny.action_dim, tiny.vocab_size) == (H, D, 512)
    chunk = smooth_chunk(np.random.default_rng(6))
    result = tiny.decode(tiny.encode(chunk))
    assert result.ok
    np.testing.assert_allclose(result.actions, dct_matrix(H).T @ (np.around(direct_dct(chunk) * 10) / 10), atol=1e-12)


@pytest.mark.parametrize("files, expect", [
    ({}, "lacks"),
    ({"tokenizer.json": "{}", "processor_config.json": "{}"}, "not a tokenizers JSON"),
    ({"tokenizer.json": None, "processor_config.json": "[1]"}, "JSON object"),
    ({"tokenizer.json": None, "processor_config.json": '{"scale": "ten"}'}, "scale must be a number"),
    ({"tokenizer.json": None, "processor_config.json": '{"scale": 0}'}, "positive"),
])
def test_bad_tokenizer_folders_are_one_line_errors(tmp_path: Path, files: dict, expect: str) -> None:
    for name, text in files.items():
        source = (TINY_FAST_TOKENIZER / name).read_text() if text is None else text
        (tmp_path / name).write_text(source)
    with pytest.raises(ConfigError, match=expect) as err:
        FastActionTokenizer.from_path(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no FAST tokenizer folder"):
        FastActionTokenizer.from_path(tmp_path / "absent")
