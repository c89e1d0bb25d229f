"""Make docs/images/reach_tiny_example.jpg: reach-tiny's real attention on one held-out scene under two prompts.

The model is pi0viz's small trained pi0 (docs/reach_tiny.md). The same scene is asked for two different objects;
each half shows the rendered cell (agentview map and prompt map, each on its own color scale) of the model card's
best denoising step and layer, for action token 0, as `pi0viz demo` writes it:

    python docs/images/reach_tiny_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from pi0viz.core.fusion import ColorScale
from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy, model_card
from pi0viz.policy.reach_task import prompt_for
from pi0viz.render import RenderOptions, render_bundle

OUT = Path(__file__).with_name("reach_tiny_example.jpg")
# A shipped held-out layout (libero_object task 4's first) and two of its objects, picked because the model
# looks at both: over all held-out examples it does so in most, not all (docs/reach_tiny.md has the spread).
SCENE = 8
OBJECTS = ("salad dressing", "milk")


def main() -> None:
    policy = load_reach_policy()
    held = heldout_scenes()
    best = model_card()["heldout"]["best_cell"]
    step, layer = best["step"], best["layer"]
    objects = [held.labels[SCENE].index(label) for label in OBJECTS]
    halves = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in objects:
            obs = held.observation(SCENE, int(k))
            bundle = policy.infer(obs, return_bundle=True, inference_step=0)["attention_bundle"]
            out = Path(tmp) / str(k)
            render_bundle(bundle, out, RenderOptions(steps=str(step), layers=str(layer), action_tokens="0",
                                                     workers=1, zoom=2, quality=92, scale=ColorScale("region")))
            cell = out / "inference_timestep_0" / f"diffusion_timestep_{step}" / "action_token_0" / f"layer_{layer}"
            cam = Image.open(cell / "fused_attention_on_base_0_rgb.jpg").convert("RGB")
            txt = Image.open(cell / "fused_attention_on_text.jpg").convert("RGB")
            title = f'"{prompt_for(held.labels[SCENE][k])}"'
            head = 22
            half = Image.new("RGB", (max(cam.width, txt.width), head + cam.height + 6 + txt.height), "white")
            ImageDraw.Draw(half).text((4, 4), title, fill="black")
            half.paste(cam, (0, head))
            half.paste(txt, (0, head + cam.height + 6))
            halves.append(half)
    gap, foot = 12, 22
    sheet = Image.new("RGB", (sum(h.width for h in halves) + gap, max(h.height for h in halves) + foot), "white")
    sheet.paste(halves[0], (0, 0))
    sheet.paste(halves[1], (halves[0].width + gap, 0))
    ImageDraw.Draw(sheet).text(
        (4, sheet.height - foot + 4),
        f"reach-tiny (pi0viz's small trained pi0, 0.45 M params), held-out scene; step {step}, layer {layer}, "
        f"action token 0", fill="black")
    sheet.save(OUT, quality=90)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB, {sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
