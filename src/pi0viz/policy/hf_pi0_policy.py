"""transformers' own PI0 checkpoint behind pi0viz's policy interface (LIBERO requests in, actions + bundle out).

The folder is what `PI0ForConditionalGeneration.save_pretrained` and `PI0Processor.save_pretrained` write into one
place (config.json, model.safetensors, processor_config.json, the tokenizer files). The processor builds the model's
inputs exactly as a transformers user's loop does: `<image> * 256` per camera, BOS, prompt, "\\n"; images resized and
padded to 224 and scaled to [-1, 1]; the state normalized with the processor's `state_mean` / `state_std` and padded.
The actions come back through `actions_mean` / `actions_std` (the inverse of the processor's normalization), cut to
their length. Attention: `pi0viz.torch_capture.capture_attention` around the unmodified model (its expert runs
eager attention inside the block). Needs transformers >= 5.4 with torch (docs/torch.md).

Request (openpi's LIBERO client): "observation/image" and "observation/wrist_image" uint8[h, w, 3], "observation/state"
float[d], "prompt" str, mapped by the same chain code as the LeRobot policy (`LeRobotInputs`); the two images are the
processor's camera list in that order, named base_0_rgb and left_wrist_0_rgb in the bundle (openpi's names).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.errors import CheckpointError, MissingExtraError, ObservationError, require
from pi0viz.policy.transforms import LIBERO_IMAGE_KEYS, LeRobotInputs, PolicyTransforms, SliceActions, compose

CAMERAS = tuple(LIBERO_IMAGE_KEYS.values())  # base_0_rgb, left_wrist_0_rgb: the request's images, in order


class HFPI0Policy:
    """transformers' PI0ForConditionalGeneration with its PI0Processor; `infer` as pi0viz's JAX Policy.

    Args:
        model: an uncompiled PI0ForConditionalGeneration.
        processor: its PI0Processor, with the dataset's `state_mean` / `state_std` / `actions_mean` / `actions_std`.
        description: shown by the server's metadata.
    """

    def __init__(self, model: Any, processor: Any, *, description: str = "transformers PI0") -> None:
        missing = [k for k in ("state_mean", "state_std", "actions_mean", "actions_std")
                   if getattr(processor, k, None) is None]
        if missing:
            raise CheckpointError(f"the PI0 processor has no {', '.join(missing)}: save it with the dataset's "
                                  "statistics (PI0Processor(..., state_mean=..., actions_std=...))")
        self.model = model.eval()
        self.processor = processor
        self.description = description
        self._mean = np.asarray(processor.actions_mean, dtype=np.float32)
        self._std = np.asarray(processor.actions_std, dtype=np.float32)
        self.transforms = PolicyTransforms(inputs=compose(LeRobotInputs(CAMERAS)),
                                           outputs=compose(SliceActions(self.action_dims)))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> HFPI0Policy:
        """Load a local folder holding a saved PI0ForConditionalGeneration and its PI0Processor (no Hub access).

        Raises:
            CheckpointError: not such a folder, or weights the model expects are missing from it (transformers would
                leave them random and only log it), or the processor lacks its statistics.
        """
        require("torch", "torch", "policy hf-pi0:DIR")
        try:
            import transformers
        except ImportError:
            transformers = None
        if not hasattr(transformers, "PI0ForConditionalGeneration"):
            have = getattr(transformers, "__version__", "not installed")
            raise MissingExtraError(f"policy hf-pi0:DIR needs transformers' PI0 (transformers >= 5.4; here: {have}): "
                                    "pip install 'transformers>=5.4' (docs/torch.md)")
        path = Path(path)
        config_file = path / "config.json"
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
        if model_type != "pi0":
            raise CheckpointError(f"{path} is not a transformers PI0 folder (expected config.json with model_type "
                                  f"'pi0', got {model_type!r})")
        try:
            processor = transformers.PI0Processor.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path} holds no PI0Processor ({str(err).splitlines()[0]}): save the processor "
                                  "with the model (processor.save_pretrained(DIR))") from None
        model, info = transformers.PI0ForConditionalGeneration.from_pretrained(path, output_loading_info=True)
        lost = sorted(info.get("missing_keys", [])) + sorted(str(k) for k in info.get("mismatched_keys", []))
        if lost:
            raise CheckpointError(f"{path}: {len(lost)} model weights are missing or mis-shaped (transformers would "
                                  f"leave them random), e.g. {lost[:3]}")
        return cls(model.to(device), processor, description=f"transformers PI0 ({path.name})")

    @staticmethod
    def capture_options(**kwargs: Any) -> Any:
        """The capture options this backend takes (pi0viz.torch_capture.CaptureOptions; no JAX import)."""
        from pi0viz.torch_capture import CaptureOptions

        return CaptureOptions(**kwargs)

    @property
    def action_dims(self) -> int:
        return int(self._mean.shape[0])

    def infer(self, obs: Mapping[str, Any], *, return_bundle: bool = False, inference_step: int | None = None,
              capture: Any = None) -> dict[str, Any]:
        """Actions for one LIBERO request, optionally with the call's CaptureBundle.

        Returns:
            {"actions": float32[A, action_dims], "policy_timing": {"infer_ms"}} and on request "attention_bundle".
        """
        import torch

        from pi0viz.torch_capture import CaptureOptions, capture_attention

        request = self.transforms.inputs(obs)
        state = request["observation.state"]
        if state.shape != (len(self.processor.state_mean),):
            raise ObservationError(f"observation/state has shape {list(state.shape)}; this checkpoint's processor "
                                   f"normalizes a state of {len(self.processor.state_mean)} values")
        images = [_uint8_image(request[c]) for c in CAMERAS]
        want = return_bundle or capture is not None
        start = time.monotonic()
        inputs = self.processor(images=[images], text=[request["task"]], state=state[None])
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            hooks = capture_attention(self.model, capture or CaptureOptions()) if want else contextlib.nullcontext()
            with hooks as cap:
                chunk = self.model.sample_actions(**inputs)  # [1, H, max_action_dim], normalized
        chunk = chunk.detach().float().cpu().numpy()[0, :, : self.action_dims]
        actions = self.transforms.outputs({"actions": chunk * (self._std + 1e-8) + self._mean})["actions"]
        result: dict[str, Any] = {"actions": actions,
                                  "policy_timing": {"infer_ms": (time.monotonic() - start) * 1000}}
        if want:
            result["attention_bundle"] = cap.bundle(
                camera_names=list(CAMERAS), tokenizer=self.processor.tokenizer, prompt=request["task"],
                actions=actions[None], inference_step=inference_step)
        return result

    def __repr__(self) -> str:
        return f"HFPI0Policy({self.description})"


def _uint8_image(chw: np.ndarray) -> np.ndarray:
    """float32[3, h, w] in [0, 1] (the input chain's image) -> uint8[h, w, 3], what the processor takes."""
    return np.clip(np.rint(chw.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
