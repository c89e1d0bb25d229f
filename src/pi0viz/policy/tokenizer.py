"""pi0's prompt tokenizer: SentencePiece in openpi's pi0 format, with display pieces for the viewer.

pi0 reads the prompt as `<bos> + encode(cleaned prompt) + encode("\\n")`, padded with id 0 to
`max_token_len` (48 for pi0, 200 for pi0.5); "\\n" marks the start of the answer. pi0.5 with discrete state
input reads `<bos> + encode("Task: {cleaned}, State: {s};\\nAction: ")`, s = the normalized state in 256 bins.
The ids must come from PaliGemma's SentencePiece model (257152 pieces) for a real checkpoint to understand them. That
model cannot ship with pi0viz, so `PromptTokenizer.default()` uses it when openpi has already cached
it, and otherwise falls back to a small model bundled with pi0viz ("pi0viz-robot-tasks"), trained on
robot-task instructions by scripts/train_tokenizer.py. It follows Gemma's id conventions (pad 0,
eos 1, bos 2, "\\n" one piece) but its ids are meaningless to a trained pi0: it is for the offline demo.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm

logger = logging.getLogger(__name__)

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "tokenizer" / "pi0viz_robot_tasks.model"
BUNDLED_NAME = "pi0viz-robot-tasks (not PaliGemma)"
PALIGEMMA_VOCAB_SIZE = 257152  # pieces in big_vision's paligemma_tokenizer.model = pi0's embedding rows
NEWLINE_DISPLAY = "\\n"  # how the "start of answer" piece is shown (a real newline would be invisible)


def openpi_tokenizer_path() -> Path:
    """Where openpi caches PaliGemma's tokenizer: `$OPENPI_DATA_HOME` or ~/.cache/openpi, then big_vision/."""
    home = os.environ.get("OPENPI_DATA_HOME")
    cache = Path(home).expanduser() if home else Path.home() / ".cache" / "openpi"
    return cache / "big_vision" / "paligemma_tokenizer.model"


STATE_BINS = 256  # openpi's pi0.5 state discretization: 256 bins over [-1, 1]


def discretize_state(state: np.ndarray) -> np.ndarray:
    """openpi's pi0.5 state tokens: normalized float[d] -> int[d] bin index, digitize over 256 bins of [-1, 1],
    minus 1 (so values below -1 give -1 and values from 1 - 2/256 up give 255, as in openpi)."""
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state), bins=edges) - 1


def clean_prompt(prompt: str) -> str:
    """openpi's pi0 prompt cleaning: strip, then '_' and '\\n' become spaces (case is kept)."""
    return prompt.strip().replace("_", " ").replace("\n", " ")


class PromptTokenizer:
    """A SentencePiece model used the way openpi's pi0 uses PaliGemma's tokenizer.

    Attributes:
        name: a human-readable name of the model ("paligemma" or BUNDLED_NAME or the file name).
        path: the .model file.
        vocab_size: number of pieces; the model's embedding table must have at least this many rows.
    """

    def __init__(self, processor: spm.SentencePieceProcessor, *, name: str, path: Path | None = None) -> None:
        self._sp = processor
        self.name = name
        self.path = path
        self.vocab_size = int(processor.get_piece_size())
        self.bos_id = int(processor.bos_id())
        if self.bos_id < 0:
            raise ValueError(f"tokenizer {name!r} defines no BOS piece; pi0 prompts start with BOS")
        # openpi pads with 0 (`False`) whatever the model's pad id is; Gemma's pad piece is 0 as well.
        self.pad_id = 0
        self._newline = list(processor.encode("\n"))

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, name: str | None = None) -> "PromptTokenizer":
        """Load a SentencePiece .model file (e.g. PaliGemma's `paligemma_tokenizer.model`)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no SentencePiece model at {path}; for a real pi0 checkpoint pass PaliGemma's "
                f"paligemma_tokenizer.model (openpi caches it at {openpi_tokenizer_path()})"
            )
        proc = spm.SentencePieceProcessor()
        try:
            proc.load(str(path))
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{path} is not a SentencePiece model: {err}") from None
        if name is None:
            if path.resolve() == BUNDLED_MODEL:
                name = BUNDLED_NAME
            elif proc.get_piece_size() == PALIGEMMA_VOCAB_SIZE:
                name = f"paligemma ({path.name})"
            else:
                name = path.name
        return cls(proc, name=name, path=path)

    @classmethod
    def bundled(cls) -> "PromptTokenizer":
        """The offline model shipped with pi0viz (1536 pieces; NOT PaliGemma's, untrained pi0 only)."""
        return cls.from_path(BUNDLED_MODEL, name=BUNDLED_NAME)

    @classmethod
    def default(cls) -> "PromptTokenizer":
        """PaliGemma's model from openpi's cache if it is there, else the bundled offline model."""
        cached = openpi_tokenizer_path()
        if cached.is_file():
            return cls.from_path(cached, name="paligemma (openpi cache)")
        return cls.bundled()

    @property
    def is_bundled(self) -> bool:
        return self.name == BUNDLED_NAME

    # -- use -----------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        """Unpadded pi0 token ids: BOS + encode(clean_prompt(prompt)) + encode("\\n")."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return [self.bos_id, *self._sp.encode(clean_prompt(prompt))] + self._newline

    def encode_prompt_with_state(self, prompt: str, state: np.ndarray) -> list[int]:
        """Unpadded pi0.5 ids with discrete state: BOS + encode("Task: {cleaned}, State: {bins};\\nAction: ").

        state: float[d], the normalized (unpadded) state; each value becomes its bin index (see discretize_state).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        bins = " ".join(str(int(b)) for b in discretize_state(state))
        return [self.bos_id, *self._sp.encode(f"Task: {clean_prompt(prompt)}, State: {bins};\nAction: ")]

    def tokenize(self, prompt: str, max_len: int, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize one prompt in openpi's format: pi0's, or with `state` pi0.5's discrete-state format.

        Returns:
            ids: int32[max_len], BOS + prompt + "\\n" then pad id 0.
            mask: bool[max_len], True for real tokens. A prompt longer than max_len is cut to max_len
                (the "\\n" may be lost, as in openpi) with a logged warning; its mask is all True.
        """
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        tokens = self.encode_prompt(prompt) if state is None else self.encode_prompt_with_state(prompt, state)
        n = len(tokens)
        if n > max_len:
            logger.warning("prompt is %d tokens, more than max_len %d: truncated (prompt %r)", n, max_len, prompt)
            tokens, n = tokens[:max_len], max_len
        ids = np.full((max_len,), self.pad_id, dtype=np.int32)
        ids[:n] = tokens
        mask = np.zeros((max_len,), dtype=bool)
        mask[:n] = True
        return ids, mask

    def piece(self, token_id: int) -> str:
        """Display text of one id: specials as '<bos>'-style names, '▁' as a space, '\\n' as a visible '\\n'."""
        i = int(token_id)
        if not 0 <= i < self.vocab_size:
            return f"<id {i}>"
        if i == self.bos_id:
            return "<bos>"
        text = self._sp.id_to_piece(i)
        if self._sp.is_byte(i):  # byte fallback "<0x3A>": show printable ASCII as itself (":"), keep the rest
            value = int(text[3:-1], 16)
            return chr(value) if 0x20 <= value < 0x7F else text
        if self._sp.is_control(i) or self._sp.is_unknown(i):
            return text if text.startswith("<") else f"<{text}>"
        return text.replace("\u2581", " ").replace("\n", NEWLINE_DISPLAY).replace("\t", "\\t")

    def pieces(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Display pieces for the viewer: str[T], "" where mask is False (padding)."""
        ids, mask = np.asarray(ids), np.asarray(mask, dtype=bool)
        if ids.shape != mask.shape:
            raise ValueError(f"ids and mask must have the same shape, got {ids.shape} and {mask.shape}")
        out = [self.piece(i) if m else "" for i, m in zip(ids.reshape(-1).tolist(), mask.reshape(-1).tolist())]
        return np.asarray(out, dtype=str).reshape(ids.shape)

    def encode_text(self, text: str) -> list[int]:
        """The ids of `text` as it is: no cleaning, no BOS, no "\\n" (pi0-FAST's prompt and action text)."""
        return [int(i) for i in self._sp.encode(text)]

    def decode(self, ids: np.ndarray, mask: np.ndarray | None = None) -> str:
        """The text of the real tokens (specials dropped)."""
        ids = np.asarray(ids).reshape(-1)
        keep = ids.tolist() if mask is None else ids[np.asarray(mask, dtype=bool).reshape(-1)].tolist()
        return self._sp.decode([int(i) for i in keep])

    def __repr__(self) -> str:
        return f"PromptTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, path={str(self.path)!r})"
