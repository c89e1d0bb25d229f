"""The prompt tokenizer: openpi's pi0 format, display pieces, the bundled model and how it is found."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pi0viz.policy import tokenizer as tk
from pi0viz.policy.tokenizer import (
    BUNDLED_MODEL,
    BUNDLED_NAME,
    PromptTokenizer,
    clean_prompt,
)

ROOT = Path(__file__).resolve().parents[1]
TASK = "pick up the black bowl between the plate and the ramekin and place it on the plate"


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer.bundled()


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(BUNDLED_MODEL))


def test_bundled_model_follows_gemma_conventions(tok, sp):
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id()) == (0, 1, 2)
    assert sp.id_to_piece(0) == "<pad>" and sp.id_to_piece(2) == "<bos>"
    assert len(sp.encode("\n")) == 1, "'\\n' must be one piece (pi0's start-of-answer token)"
    assert tok.vocab_size == sp.get_piece_size() == 1536
    assert tok.name == BUNDLED_NAME and "not PaliGemma" in tok.name and tok.is_bundled
    assert BUNDLED_MODEL.stat().st_size < 300_000
    # Byte fallback: no <unk> for any text.
    assert sp.unk_id() not in sp.encode("Ünïcødé ☃ 42")


def test_tokenize_format(tok, sp):
    ids, mask = tok.tokenize(TASK, 48)
    assert ids.shape == (48,) and ids.dtype == np.int32
    assert mask.shape == (48,) and mask.dtype == bool
    expected = [2, *sp.encode(TASK), *sp.encode("\n")]
    n = len(expected)
    assert n < 48
    assert ids[:n].tolist() == expected
    assert ids[0] == sp.bos_id() and ids[n - 1] == sp.piece_to_id("\n")
    assert mask[:n].all() and not mask[n:].any()
    assert (ids[n:] == 0).all()
    # The task words of LIBERO are whole pieces of the bundled model.
    assert n == 1 + 17 + 1


def test_prompt_cleaning(tok):
    assert clean_prompt("  open_the top\ndrawer \n") == "open the top drawer"
    a, ma = tok.tokenize("  open_the top\ndrawer \n", 32)
    b, mb = tok.tokenize("open the top drawer", 32)
    assert a.tolist() == b.tolist() and ma.tolist() == mb.tolist()
    # Case is kept (openpi does not lower-case for pi0).
    assert tok.tokenize("Open", 8)[0].tolist() != tok.tokenize("open", 8)[0].tolist()


def test_truncation_warns_and_fills_mask(tok, caplog):
    full, _ = tok.tokenize(TASK, 48)
    with caplog.at_level(logging.WARNING, logger=tk.__name__):
        ids, mask = tok.tokenize(TASK, 10)
    assert "truncated" in caplog.text
    assert ids.tolist() == full[:10].tolist() and mask.all()
    # Exactly fitting: no warning, no padding.
    caplog.clear()
    n = len(tok.encode_prompt(TASK))
    with caplog.at_level(logging.WARNING, logger=tk.__name__):
        ids, mask = tok.tokenize(TASK, n)
    assert caplog.text == "" and mask.all() and ids[-1] == tok.encode_prompt(TASK)[-1]
    with pytest.raises(ValueError, match="max_len"):
        tok.tokenize(TASK, 0)
    with pytest.raises(TypeError, match="str"):
        tok.tokenize(b"bytes", 8)  # type: ignore[arg-type]


def test_pieces_for_display(tok):
    ids, mask = tok.tokenize("put the bowl on the stove", 12)
    pieces = tok.pieces(ids, mask)
    assert pieces.shape == (12,) and pieces.dtype.kind == "U"
    n = int(mask.sum())
    assert pieces[0] == "<bos>"
    assert pieces[n - 1] == "\\n"
    assert (pieces[n:] == "").all()
    # Word pieces: '▁' shown as a space, and the pieces spell the prompt.
    assert "".join(pieces[1 : n - 1]) == "put the bowl on the stove"
    assert tok.decode(ids, mask) == "put the bowl on the stove\n"
    # Batched pieces keep the shape; a mismatch is an error.
    assert tok.pieces(ids[None], mask[None]).shape == (1, 12)
    with pytest.raises(ValueError, match="same shape"):
        tok.pieces(ids, mask[:5])


def test_default_prefers_openpi_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    assert tk.openpi_tokenizer_path() == tmp_path / "big_vision" / "paligemma_tokenizer.model"
    assert PromptTokenizer.default().is_bundled  # nothing cached: the bundled model
    cached = tmp_path / "big_vision" / "paligemma_tokenizer.model"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BUNDLED_MODEL.read_bytes())  # any valid SentencePiece model stands in for PaliGemma's
    tok = PromptTokenizer.default()
    assert tok.path == cached and not tok.is_bundled and "paligemma" in tok.name


def test_from_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="paligemma_tokenizer.model"):
        PromptTokenizer.from_path(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        PromptTokenizer.from_path(bad)


def test_bundled_model_is_reproducible():
    """scripts/train_tokenizer.py --check retrains from scratch and compares bytes."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts/train_tokenizer.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "identical" in res.stdout


def test_model_file_is_in_the_wheel_sources():
    """hatch packages everything under src/pi0viz; the model must live there (not in scripts/)."""
    assert BUNDLED_MODEL.is_relative_to(ROOT / "src" / "pi0viz")
