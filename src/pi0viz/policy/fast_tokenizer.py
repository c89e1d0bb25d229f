"""FAST action tokenization (Pertsch et al. 2025), as openpi's `FASTTokenizer` and the `physical-intelligence/fast`
processor do it, without scipy or remote code: numpy for the DCT, the `tokenizers` library for the BPE.

Encoding one action chunk (normalized, float[H, D]: H time steps, D action dims):

    coefficients = DCT-II along time, orthonormal (scipy's norm="ortho"), per action dim   float[H, D]
    quantized    = round(coefficients * scale)                                                int[H, D]
    text         = chr(max(q - min_token, 0)) for q in quantized.flatten() (row-major: time-major)
    FAST tokens  = the BPE tokenizer's ids of that text                                       int[n]

Decoding reverses it: BPE decode -> ord(c) + min_token -> reshape (-1, D) -> it must be [H, D] -> / scale ->
inverse DCT. The processor returns ZEROS for a sequence that does not decode to H x D coefficients (and prints
why); `FastActionTokenizer.decode` does the same and returns the reason.

pi0-FAST generates PaliGemma ids, not FAST tokens: FAST token t is PaliGemma id `vocab - 1 - 128 - t` (the last 128
ids, <seg> tokens, are skipped; the map is its own inverse). openpi's `extract_actions` turns one call's generated
ids into actions by text: decode all ids with the prompt tokenizer; no "Action: " in the text -> zeros; else the
text after the first "Action: " up to the next "Action: " or "|", stripped, is re-encoded (no BOS), mapped to FAST
tokens and decoded (`extract_actions` here, the same steps).

The tokenizer lives in a folder as the Hugging Face repo `physical-intelligence/fast` has it: `tokenizer.json`
(a byte-level BPE) and `processor_config.json` ({"scale": 10, "min_token": -354, "vocab_size": 2048, ...}).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from pi0viz.core.writes import atomic_write, make_folder
from pi0viz.errors import ConfigError

logger = logging.getLogger(__name__)

FAST_SKIP_TOKENS = 128  # openpi: the last 128 PaliGemma ids are special (<seg>) and never FAST tokens
ACTION_MARKER = "Action: "  # openpi's postfix starts with it; the FAST tokens follow
END_MARKER = "|"  # ... and end before it (then EOS)
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "processor_config.json"
TINY_FAST_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "fast_tiny"


# -- the DCT ------------------------------------------------------------------------------------------------------


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix float64[n, n]: M[k, t] = s_k cos(pi (2t + 1) k / 2n), s_0 = sqrt(1/n),
    s_k = sqrt(2/n). `M @ x` is scipy.fft.dct(x, axis=0, norm="ortho"); M is orthogonal, so `M.T @ c` inverts it."""
    if n < 1:
        raise ValueError(f"the DCT needs at least one time step, got {n}")
    k = np.arange(n)[:, None]
    t = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * t + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] *= np.sqrt(0.5)
    return m


def dct(x: np.ndarray) -> np.ndarray:
    """DCT-II (orthonormal) along axis 0 (time): float[H, ...] -> float64[H, ...]."""
    x = np.asarray(x, dtype=np.float64)
    return np.tensordot(dct_matrix(x.shape[0]), x, axes=1)


def idct(c: np.ndarray) -> np.ndarray:
    """The inverse of `dct` along axis 0: float[H, ...] -> float64[H, ...]."""
    c = np.asarray(c, dtype=np.float64)
    return np.tensordot(dct_matrix(c.shape[0]).T, c, axes=1)


# -- PaliGemma ids <-> FAST tokens --------------------------------------------------------------------------------


def fast_to_paligemma(tokens: Any, vocab_size: int) -> np.ndarray:
    """openpi's `_act_tokens_to_paligemma_tokens`: vocab_size - 1 - 128 - t (int64, elementwise). Self-inverse:
    the same formula maps PaliGemma ids back to FAST tokens (PaliGemma: 257152 -> id 257023 - t)."""
    return int(vocab_size) - 1 - FAST_SKIP_TOKENS - np.asarray(tokens, dtype=np.int64)


paligemma_to_fast = fast_to_paligemma


class TextTokenizer(Protocol):
    """What extract_actions needs from the prompt tokenizer (pi0viz.policy.tokenizer.PromptTokenizer has it)."""

    vocab_size: int

    def decode(self, ids: np.ndarray) -> str: ...

    def encode_text(self, text: str) -> list[int]: ...


# -- the FAST tokenizer -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeResult:
    """One decoded chunk.

    Attributes:
        actions: float64[H, D] normalized actions (zeros when decoding failed, as openpi).
        fast_tokens: int64[n] the FAST tokens that were decoded (empty when none were found).
        error: None, or why the actions are zeros (one line).
    """

    actions: np.ndarray
    fast_tokens: np.ndarray
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FastActionTokenizer:
    """A FAST tokenizer: byte-level BPE over quantized DCT coefficients.

    Args:
        bpe: the `tokenizers.Tokenizer` (tokenizer.json of physical-intelligence/fast).
        scale: coefficients are multiplied by it before rounding (FAST: 10).
        min_token: the smallest quantized coefficient of the training data (FAST: -354); chars are q - min_token.
        vocab_size: the BPE vocabulary size (FAST: 2048); FAST tokens are 0..vocab_size-1.
        time_horizon, action_dim: the default chunk shape for `decode` (None: must be given).
        name: shown in descriptions.
    """

    def __init__(self, bpe: Tokenizer, *, scale: float = 10.0, min_token: int = 0, vocab_size: int | None = None,
                 time_horizon: int | None = None, action_dim: int | None = None, name: str = "FAST") -> None:
        self.bpe = bpe
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.vocab_size = int(vocab_size if vocab_size is not None else bpe.get_vocab_size())
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self.name = name

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "FastActionTokenizer":
        """Read a FAST tokenizer folder (tokenizer.json + processor_config.json, as physical-intelligence/fast; a
        Hugging Face cache snapshot folder works). Raises ConfigError (one line) for anything else."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"no FAST tokenizer folder at {folder}: expected the physical-intelligence/fast folder "
                              f"holding {TOKENIZER_FILE} and {CONFIG_FILE}")
        missing = [name for name in (TOKENIZER_FILE, CONFIG_FILE) if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"FAST tokenizer folder {folder} lacks {missing}: expected the "
                              f"physical-intelligence/fast folder holding {TOKENIZER_FILE} and {CONFIG_FILE}")
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{folder / CONFIG_FILE} is not JSON: {err}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{folder / CONFIG_FILE} must hold a JSON object with scale and min_token")
        try:
            bpe = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as err:  # the Rust library raises its own Exception type
            raise ConfigError(f"{folder / TOKENIZER_FILE} is not a tokenizers JSON file: "
                              f"{str(err).splitlines()[0][:120]}") from None

        def number(key: str, default: Any, kind: type) -> Any:
            value = config.get(key, default)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ConfigError(f"{folder / CONFIG_FILE}: {key} must be a number, got {value!r}")
            return kind(value)

        scale = number("scale", 10, float)
        if scale is None or not scale > 0:
            raise ConfigError(f"{folder / CONFIG_FILE}: scale must be a positive number, got {config.get('scale')!r}")
        return cls(bpe, scale=scale, min_token=number("min_token", 0, int) or 0,
                   vocab_size=number("vocab_size", None, int), time_horizon=number("time_horizon", None, int),
                   action_dim=number("action_dim", None, int), name=f"FAST ({folder.name})")

    @classmethod
    def fit(cls, chunks: Iterable[np.ndarray], *, scale: float = 10.0, vocab_size: int = 1024,
            name: str = "FAST (fitted)") -> "FastActionTokenizer":
        """Train a FAST tokenizer on action chunks float[H, D] as the FAST processor's `fit` does: quantized DCT
        coefficients of all chunks give min_token, each chunk becomes a string of chars, and a byte-level BPE
        (every char of the coefficient range in the initial alphabet, merges seen at least twice) is trained."""
        coefficients = [np.around(dct(c) * scale).astype(np.int64) for c in chunks]
        if not coefficients:
            raise ValueError("fit needs at least one action chunk")
        low = int(min(c.min() for c in coefficients))
        high = int(max(c.max() for c in coefficients))
        if high - low > vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the coefficient range {high - low}")
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                                      initial_alphabet=[chr(i) for i in range(high - low + 1)],
                                      max_token_length=10000)
        bpe.train_from_iterator(("".join(map(chr, c.reshape(-1) - low)) for c in coefficients), trainer=trainer)
        shape = coefficients[0].shape
        return cls(bpe, scale=scale, min_token=low, vocab_size=vocab_size, name=name,
                   time_horizon=int(shape[0]), action_dim=int(shape[1]) if len(shape) > 1 else 1)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write tokenizer.json and processor_config.json (the physical-intelligence/fast layout) into `folder`."""
        folder = make_folder(folder)
        atomic_write(folder / TOKENIZER_FILE, self.bpe.to_str())
        config = {"processor_class": "UniversalActionProcessor", "scale": self.scale, "min_token": self.min_token,
                  "vocab_size": self.vocab_size, "time_horizon": self.time_horizon, "action_dim": self.action_dim}
        atomic_write(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return folder

    # -- use ------------------------------------------------------------------------------------------------

    def encode(self, actions: np.ndarray) -> list[int]:
        """FAST tokens of one chunk: actions float[H, D] (normalized) -> list of ints in [0, vocab_size)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2:
            raise ValueError(f"an action chunk is float[H, D], got shape {list(actions.shape)}")
        quantized = np.around(dct(actions) * self.scale).astype(np.int64)
        text = "".join(map(chr, np.maximum(quantized.reshape(-1) - self.min_token, 0)))
        return list(self.bpe.encode(text).ids)

    def decode(self, tokens: Sequence[int] | np.ndarray, time_horizon: int | None = None,
               action_dim: int | None = None) -> DecodeResult:
        """One chunk float64[H, D] from FAST tokens; zeros plus the reason when they do not decode to H x D
        coefficients (the processor's behaviour)."""
        h = time_horizon or self.time_horizon
        d = action_dim or self.action_dim
        if not h or not d:
            raise ConfigError(f"FAST tokenizer {self.name} needs the chunk shape: pass time_horizon and action_dim")
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        zeros = np.zeros((h, d))
        bad = tokens[(tokens < 0) | (tokens >= self.bpe.get_vocab_size())]
        if bad.size:
            return DecodeResult(zeros, tokens, f"token {int(bad[0])} is outside the FAST vocabulary "
                                               f"[0, {self.bpe.get_vocab_size()})")
        text = self.bpe.decode([int(t) for t in tokens], skip_special_tokens=True)
        coefficients = np.array([ord(c) for c in text], dtype=np.int64) + self.min_token
        if coefficients.size != h * d:
            return DecodeResult(zeros, tokens, f"{tokens.size} FAST tokens decode to {coefficients.size} DCT "
                                               f"coefficients, not {h} x {d} = {h * d}")
        return DecodeResult(idct(coefficients.reshape(h, d) / self.scale), tokens)

    def __repr__(self) -> str:
        return (f"FastActionTokenizer(name={self.name!r}, scale={self.scale}, min_token={self.min_token}, "
                f"vocab_size={self.vocab_size})")


# -- generated PaliGemma ids -> actions (openpi's extract_actions) -------------------------------------------------


def extract_actions(generated_ids: Any, text_tokenizer: TextTokenizer, fast: FastActionTokenizer,
                    time_horizon: int, action_dim: int) -> DecodeResult:
    """One call's generated ids int[J] -> normalized actions float64[H, D], as openpi's FASTTokenizer.extract_actions:
    the ids as text; zeros when it has no "Action: "; else the text after it up to "|", stripped, re-encoded with
    the prompt tokenizer, mapped to FAST tokens (vocab - 1 - 128 - id) and decoded. `DecodeResult.error` says why
    the actions are zeros; nothing raises for a model's malformed output."""
    ids = np.asarray(generated_ids, dtype=np.int64).reshape(-1)
    vocab = int(text_tokenizer.vocab_size)
    outside = ids[(ids < 0) | (ids >= vocab)]
    zeros = np.zeros((time_horizon, action_dim))
    if outside.size:
        return DecodeResult(zeros, np.zeros(0, np.int64), f"generated id {int(outside[0])} is outside the prompt "
                                                          f"tokenizer's vocabulary of {vocab}")
    text = text_tokenizer.decode(ids)
    if ACTION_MARKER not in text:
        return DecodeResult(zeros, np.zeros(0, np.int64), f"the generated text has no {ACTION_MARKER!r} "
                                                          f"(text {text[:60]!r})")
    body = text.split(ACTION_MARKER)[1].split(END_MARKER)[0].strip()  # openpi: between the first two markers
    tokens = paligemma_to_fast(text_tokenizer.encode_text(body), vocab)
    return fast.decode(tokens, time_horizon, action_dim)
