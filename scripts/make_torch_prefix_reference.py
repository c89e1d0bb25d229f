"""Write tests/data/torch_prefix_reference.npz: pi0viz's JAX prefix attention on openpi's tiny pi0 / pi0.5 (case_A),
the reference the PyTorch prefix capture (tests/test_torch_prefix.py) is checked against in every stack's venv (the
LeRobot 0.6 and transformers venvs have no JAX; pi0viz's JAX model is exact against openpi,
tests/test_model_reference.py).

    nice .venv/bin/python scripts/make_torch_prefix_reference.py

Members, per case NAME (pi0, pi0_masked: case_A with right_wrist_0_rgb masked, pi05):
    NAME/rows       int32[R]        the query rows kept: every 32nd image token, each valid prompt token, two pads
    NAME/attention  float32[L, R, P] those rows of the prefix-pass probabilities, max over the heads (batch 0)
A float32 [L, P, P] per case would be 10 MB; the kept rows cover the three blocks (image rows over all keys, prompt
rows over all keys) at a tenth of that.
And pi0viz's JAX knockouts on pi0 case_A (`pi0viz.causal.knockout.sample_knockouts`), for tests/test_torch_knockout.py:
    knockout/names    str[n]                    "KEYS WHERE LAYER" of each condition (KNOCKOUTS)
    knockout/keys     bool[n, P]                the removed prefix keys
    knockout/layer    int32[n]                  the one layer, -1 = every layer
    knockout/actions  float32[n, 50, 32]        the chunk sampled from case_A's noise
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "torch_prefix_reference.npz"
IMAGE_STRIDE = 32


def kept_rows(num_image_tokens: int, token_mask: np.ndarray) -> np.ndarray:
    """int32[R]: every IMAGE_STRIDE-th image row, every valid prompt row, the first two pad rows."""
    prompt = np.flatnonzero(token_mask) + num_image_tokens
    pads = np.flatnonzero(~token_mask)[:2] + num_image_tokens
    return np.concatenate([np.arange(0, num_image_tokens, IMAGE_STRIDE), prompt, pads]).astype(np.int32)


def reference(kind: str, *, masked: str | None = None) -> dict[str, np.ndarray]:
    """One case's kept rows and their fused prefix attention from pi0viz's JAX model."""
    import jax

    sys.path.insert(0, str(ROOT / "tests"))
    from openpi_reference import observation_of

    from pi0viz.model import CaptureOptions, Pi0Config, load_params, sample_actions

    folder = ROOT / "tests" / "data" / f"openpi_{kind}_tiny"
    config = Pi0Config.tiny() if kind == "pi0" else Pi0Config.tiny(pi05=True, action_horizon=10, max_token_len=200)
    with np.load(folder / "case_A.npz", allow_pickle=False) as z:
        case = {k: z[k] for k in z.files}
    if masked is not None:
        case[f"image_mask/{masked}"] = np.zeros_like(case[f"image_mask/{masked}"])
    out = sample_actions(load_params(folder / "params"), config, jax.random.key(0), observation_of(case),
                         num_steps=int(case["num_steps"]), noise=case["noise"],
                         capture=CaptureOptions(fuse_heads=True, prefix=True))
    att = np.asarray(out.prefix_attention, np.float32)[:, 0, 0, 0]  # [L, P, P]
    images = len(case["image_keys"]) * config.num_image_tokens
    rows = kept_rows(images, np.asarray(case["tokenized_prompt_mask"][0], bool))
    return {"rows": rows, "attention": att[:, rows]}


# (key set, where, layer): the base camera's patches and the prompt's slots, each route, one layer alone
KNOCKOUTS = (("base", "all", None), ("base", "prefix", None), ("base", "expert", None), ("prompt", "prefix", 1),
             ("prompt", "expert", None), ("base", "all", 2))


def knockout_reference() -> dict[str, np.ndarray]:
    """The JAX knockouts of KNOCKOUTS on pi0 case_A (batch 1, its noise)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from openpi_reference import observation_of

    from pi0viz.causal.knockout import Knockout, camera_keys, prompt_keys, sample_knockouts, take_observation
    from pi0viz.model import Pi0Config, load_params

    folder = ROOT / "tests" / "data" / "openpi_pi0_tiny"
    config = Pi0Config.tiny()
    with np.load(folder / "case_A.npz", allow_pickle=False) as z:
        case = {k: z[k] for k in z.files}
    sets = {"base": camera_keys(config, "base_0_rgb"), "prompt": prompt_keys(config)}
    conditions = [Knockout(f"{k} {w} {layer}", sets[k], route=w, layer=layer) for k, w, layer in KNOCKOUTS]
    n = len(conditions)
    rows = np.zeros(n, int)
    actions, _ = sample_knockouts(load_params(folder / "params"), config, take_observation(observation_of(case), rows),
                                  conditions, np.repeat(case["noise"], n, axis=0), num_steps=int(case["num_steps"]),
                                  batch=n)
    return {"knockout/names": np.asarray([c.name for c in conditions], str),
            "knockout/keys": np.stack([c.keys for c in conditions]),
            "knockout/layer": np.asarray([-1 if c.layer is None else c.layer for c in conditions], np.int32),
            "knockout/actions": np.asarray(actions, np.float32)}


def main() -> None:
    from pi0viz.core.writes import atomic_write

    arrays: dict[str, np.ndarray] = {}
    for name, kind, masked in (("pi0", "pi0", None), ("pi0_masked", "pi0", "right_wrist_0_rgb"),
                               ("pi05", "pi05", None)):
        for key, value in reference(kind, masked=masked).items():
            arrays[f"{name}/{key}"] = value
    arrays.update(knockout_reference())
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(OUT, buf.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
