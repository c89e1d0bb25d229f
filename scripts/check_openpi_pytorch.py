"""Manual check (not CI): pi0viz's capture on openpi's own PyTorch port, against openpi's tiny JAX reference.

openpi is not on any package registry, so this runs only where its source was placed by hand, in a venv of its
own (docs/torch.md, "openpi's PyTorch port"), set up the way openpi's README says:

    python3 -m venv /tmp/opv && /tmp/opv/bin/pip install torch==2.13.0 transformers==4.53.2 jax==0.5.3 \\
        jaxlib==0.5.3 flax==0.10.2 "numpy<2" orbax-checkpoint==0.11.13 jaxtyping==0.2.36 beartype==0.19.0 \\
        einops augmax safetensors ml_dtypes
    cp -r OPENPI/src/openpi/models_pytorch/transformers_replace/* /tmp/opv/lib/python3.11/site-packages/transformers/
    /tmp/opv/bin/python scripts/check_openpi_pytorch.py --openpi-src OPENPI/src

Builds openpi's PI0Pytorch (pi0 and pi0.5, "dummy" Gemma, the reference data's tiny SigLIP registered while it is
built, pytorch_compile_mode=None), loads the tiny openpi checkpoint with pi0viz's converter (prefix ""), runs
case_A's inputs and noise under `capture_attention`, and prints the largest differences to openpi's JAX actions
and attention.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
SHAPES = {"pi0": {"action_horizon": 50, "max_token_len": 48}, "pi05": {"action_horizon": 10, "max_token_len": 200}}


def build(kind: str):
    from openpi.models import pi0_config
    from openpi.models_pytorch import gemma_pytorch
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch

    real = gemma_pytorch.PaliGemmaForConditionalGeneration

    def tiny_paligemma(config):  # SigLIP "mu/14" of the reference data, projector to the 64-wide "dummy" Gemma
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size = 32, 128
        vision.num_hidden_layers, vision.num_attention_heads = 1, 2
        vision.projection_dim = config.text_config.hidden_size
        return real(config=config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = tiny_paligemma
    try:
        config = pi0_config.Pi0Config(pi05=kind == "pi05", dtype="float32", paligemma_variant="dummy",
                                      action_expert_variant="dummy", pytorch_compile_mode=None, **SHAPES[kind])
        return PI0Pytorch(config).eval()
    finally:
        gemma_pytorch.PaliGemmaForConditionalGeneration = real


def check(kind: str) -> None:
    import torch
    from openpi.models.model import Observation

    from pi0viz.torch_capture import capture_attention, load_openpi_params

    data = ROOT / "tests" / "data" / f"openpi_{kind}_tiny"
    with np.load(data / "params_flat.npz", allow_pickle=False) as z:
        params = {k: z[k] for k in z.files}
    with np.load(data / "case_A.npz", allow_pickle=False) as z:
        case = {k: z[k] for k in z.files}
    model = build(kind)
    load_openpi_params(model, params)
    obs = Observation(
        # openpi's PyTorch path takes channels-first images (its preprocessing keeps the layout it is given)
        images={c: torch.from_numpy(case[f"image/{c}"]).permute(0, 3, 1, 2).contiguous() for c in CAMERAS},
        image_masks={c: torch.from_numpy(case[f"image_mask/{c}"]) for c in CAMERAS},
        state=torch.from_numpy(case["state"]),
        tokenized_prompt=torch.from_numpy(case["tokenized_prompt"]).long(),
        tokenized_prompt_mask=torch.from_numpy(case["tokenized_prompt_mask"]),
    )
    with torch.no_grad(), capture_attention(model) as cap:
        actions = model.sample_actions("cpu", obs, noise=torch.from_numpy(case["noise"])).numpy()
    attention = cap.attention()
    bundle = cap.bundle()
    assert bundle.camera_names == list(CAMERAS), bundle.camera_names
    print(f"{kind}: openpi PI0Pytorch, capture {attention.shape}; bundle cameras {bundle.camera_names}")
    print(f"  actions max |diff| vs openpi JAX: {np.abs(actions - case['actions']).max():.2e}")
    diff = np.abs(attention[case["attention_steps"]] - case["attention_probs"]).max()
    print(f"  attention max |diff| vs openpi JAX (steps {case['attention_steps'].tolist()}): {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openpi-src", required=True, help="openpi's src/ folder (holds openpi/models_pytorch)")
    args = parser.parse_args()
    sys.path[:0] = [args.openpi_src, str(ROOT / "src")]
    import torch

    torch.set_num_threads(1)
    for kind in ("pi0", "pi05"):
        check(kind)


if __name__ == "__main__":
    main()
