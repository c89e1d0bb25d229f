"""Write the tiny FAST tokenizer pi0viz ships (src/pi0viz/assets/fast_tiny): a byte-level BPE of 512 tokens fitted,
as the FAST processor fits one, on seeded synthetic smooth action chunks (10 steps x 7 dims in [-1, 1], the
pi0_fast_libero chunk shape). For the untrained tiny pi0-FAST only (`pi0viz serve --tiny --config pi0_fast_libero`);
a real checkpoint needs physical-intelligence/fast (--fast-tokenizer).

    .venv/bin/python scripts/make_fast_tiny_tokenizer.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pi0viz.policy.fast_tokenizer import TINY_FAST_TOKENIZER, FastActionTokenizer


def smooth_chunk(rng: np.random.Generator, horizon: int = 10, dims: int = 7) -> np.ndarray:
    """float[horizon, dims] in [-1, 1]: an offset plus one slow sine per dim."""
    t = np.linspace(0.0, 1.0, horizon)[:, None]
    offset = rng.uniform(-0.8, 0.8, (1, dims))
    amplitude = rng.uniform(-0.5, 0.5, (1, dims))
    phase = rng.uniform(0.2, 1.0, (1, dims)) * t + rng.uniform(0.0, 1.0, (1, dims))
    return np.clip(offset + amplitude * np.sin(2 * np.pi * phase), -1.0, 1.0)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else TINY_FAST_TOKENIZER
    rng = np.random.default_rng(0)
    tokenizer = FastActionTokenizer.fit([smooth_chunk(rng) for _ in range(2000)], scale=10.0, vocab_size=512,
                                        name="FAST tiny (pi0viz)")
    tokenizer.save(out)
    print(f"wrote {out}: {tokenizer}")


if __name__ == "__main__":
    main()
