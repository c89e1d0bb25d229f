"""A LeRobot pi0 / pi0.5 checkpoint behind pi0viz's policy interface (LIBERO requests in, actions + bundle out).

The checkpoint folder is what LeRobot's `save_pretrained` writes (config.json, model.safetensors,
policy_preprocessor.json, policy_postprocessor.json and their normalizer stats); LeRobot's own pipelines do the
normalization and tokenization, so the policy sees exactly what `lerobot-eval` would feed it. Attention comes from
`pi0viz.torch_capture.capture_attention` around the unmodified policy. Extra [torch] plus the user's LeRobot.

Request (openpi's LIBERO client): "observation/image" and "observation/wrist_image" uint8[h, w, 3] (already rotated
180 degrees as LeRobot's LIBERO env also does), "observation/state" float[8], "prompt" str. The two images go to
the first two `image_features` of the checkpoint's config, in order (LeRobot's LIBERO datasets: image, image2).
The request goes through the same chain code as the JAX policy (`pi0viz.policy.transforms`): input chain
`LeRobotInputs` (LIBERO keys -> LeRobot's observation), output chain `SliceActions` (the robot's dims, float32).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from pi0viz.errors import CheckpointError, require
from pi0viz.policy.transforms import LIBERO_IMAGE_KEYS, LeRobotInputs, PolicyTransforms, SliceActions, compose

REQUEST_IMAGES = tuple(LIBERO_IMAGE_KEYS)


class LeRobotPolicy:
    """LeRobot's PI0Policy / PI05Policy with its processor pipelines; `infer` as pi0viz's JAX Policy.

    Args:
        policy: an uncompiled LeRobot PI0Policy / PI05Policy.
        preprocessor, postprocessor: LeRobot's PolicyProcessorPipelines saved with the checkpoint.
        description: shown by the server's metadata.
    """

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any, *, description: str = "LeRobot pi0") -> None:
        self.policy = policy.eval()
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.description = description
        self.image_keys = list(policy.config.image_features)
        if len(self.image_keys) < len(REQUEST_IMAGES):
            raise CheckpointError(f"the checkpoint's config has {len(self.image_keys)} image features "
                                  f"({self.image_keys}); LIBERO requests carry {len(REQUEST_IMAGES)} images")
        from pi0viz.torch_capture import pipeline_tokenizer

        self.tokenizer = pipeline_tokenizer(preprocessor)
        # LeRobot's own processors normalize and tokenize; the chains only map the request and slice the output.
        self.transforms = PolicyTransforms(inputs=compose(LeRobotInputs(tuple(self.image_keys))),
                                           outputs=compose(SliceActions(self.action_dims)))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> LeRobotPolicy:
        """Load a local LeRobot checkpoint folder (no Hub access except what its tokenizer step needs)."""
        require("torch", "torch", "a LeRobot policy")
        require("lerobot", "torch", "a LeRobot policy (install LeRobot yourself: pip install lerobot)")
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path} is not a LeRobot checkpoint folder (expected config.json and model.safetensors)")
        config = PreTrainedConfig.from_pretrained(path)
        if config.type not in ("pi0", "pi05"):
            raise CheckpointError(f"{path} holds a LeRobot {config.type!r} policy; pi0viz captures pi0 and pi05")
        config.device = device
        config.compile_model = False  # a compiled sampler hides the attention from the hooks
        policy = get_policy_class(config.type).from_pretrained(path, config=config)
        pre, post = make_pre_post_processors(config, pretrained_path=str(path))
        return cls(policy, pre, post, description=f"LeRobot {config.type} ({path.name})")

    @staticmethod
    def capture_options(**kwargs: Any) -> Any:
        """The capture options this backend takes (pi0viz.torch_capture.CaptureOptions; no JAX import)."""
        from pi0viz.torch_capture import CaptureOptions

        return CaptureOptions(**kwargs)

    @property
    def action_dims(self) -> int:
        return int(self.policy.config.output_features["action"].shape[0])

    def infer(self, obs: Mapping[str, Any], *, return_bundle: bool = False, inference_step: int | None = None,
              capture: Any = None) -> dict[str, Any]:
        """Actions for one LIBERO request, optionally with the call's CaptureBundle.

        Args:
            obs: the request (module docstring).
            return_bundle: also return "attention_bundle".
            capture: pi0viz.torch_capture.CaptureOptions (implies return_bundle); default the full attention.
            inference_step: stored in the bundle.
        Returns:
            {"actions": float32[A, action_dims], "policy_timing": {"infer_ms"}} and on request "attention_bundle".
        """
        import torch

        from pi0viz.torch_capture import CaptureOptions, capture_attention

        request = self.transforms.inputs(obs)
        batch = self._batch(request)
        want = return_bundle or capture is not None
        start = time.monotonic()
        with torch.no_grad():
            inputs = self.preprocessor(batch)
            hooks = capture_attention(self.policy, capture or CaptureOptions()) if want else contextlib.nullcontext()
            with hooks as cap:
                chunk = self.policy.predict_action_chunk(inputs)  # [1, A, action_dims], normalized
            actions = self.postprocessor(chunk)
        actions = self.transforms.outputs({"actions": actions.detach().float().cpu().numpy()[0]})["actions"]
        result: dict[str, Any] = {"actions": actions,
                                  "policy_timing": {"infer_ms": (time.monotonic() - start) * 1000}}
        if want:
            result["attention_bundle"] = cap.bundle(
                camera_names=[k.rsplit(".", 1)[-1] for k in self.image_keys], tokenizer=self.tokenizer,
                prompt=request["task"], actions=actions[None], inference_step=inference_step)
        return result

    def _batch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The input chain's LeRobot observation as torch tensors with a batch axis of 1 (images float[1, 3, h, w]
        in [0, 1], state float32[1, state_dim]) and the task as a list of one string."""
        import torch

        batch: dict[str, Any] = {k: torch.from_numpy(v)[None] for k, v in request.items() if k != "task"}
        batch["task"] = [request["task"]]
        return batch

    def __repr__(self) -> str:
        return f"LeRobotPolicy({self.description})"

