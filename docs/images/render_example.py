"""Make docs/images/render_example.jpg: one cell of the attention_viz tree, its files side by side.

Real LIBERO frames (shipped with pi0viz) under synthetic attention with hot spots we place ourselves, so the
picture shows what the renderer draws, not what a model attends to:

    python docs/images/render_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.render import RenderOptions, render_bundle
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle

OUT = Path(__file__).with_name("render_example.jpg")


def main() -> None:
    frame = next(f for f in load_libero_frames() if f.name == "libero_spatial_task0")
    words = frame.prompt.split()
    bundle = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=1, image_masks=(True, True, False),
                              num_valid_text=len(words) + 2)
    bundle.images[0, 0], bundle.images[0, 1] = frame.image, frame.wrist_image
    pieces = ["<bos>"] + ["▁" + w for w in words] + ["\n"]
    bundle.token_pieces[0, : len(pieces)] = pieces
    lay = bundle.layout
    base, wrist, text = lay.camera_region(0).start, lay.camera_region(1).start, lay.text_region.start
    spots = [(6, base + 9 * 16 + 7, 0.55), (1, base + 9 * 16 + 8, 0.35), (4, wrist + 11 * 16 + 8, 0.25),
             (2, text + 1 + words.index("bowl"), 0.45), (3, text + 1 + words.index("plate"), 0.2)]
    for head, key, mass in spots:
        place_hot_key(bundle, step=0, layer=0, action_token=0, head=head, key=key, mass=mass)
    with tempfile.TemporaryDirectory() as tmp:
        render_bundle(bundle, tmp, RenderOptions(workers=1, zoom=2, quality=92))
        cell = Path(tmp) / "inference_timestep_0" / "diffusion_timestep_0" / "action_token_0" / "layer_0"
        cams = [Image.open(cell / f"fused_attention_on_{n}.jpg").convert("RGB")
                for n in ("base_0_rgb", "left_wrist_0_rgb")]
        txt = Image.open(cell / "fused_attention_on_text.jpg").convert("RGB")
        gap = 8
        width = max(sum(c.width for c in cams) + gap, txt.width)
        sheet = Image.new("RGB", (width, cams[0].height + gap + txt.height), "white")
        sheet.paste(cams[0], (0, 0))
        sheet.paste(cams[1], (cams[0].width + gap, 0))
        sheet.paste(txt, (0, cams[0].height + gap))
        sheet.save(OUT, quality=90)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB, {sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
