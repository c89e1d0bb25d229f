"""The one policy spec: which policy a command runs, written the same way for `pi0viz demo`, `pi0viz serve`,
`pi0viz sweep` and examples/libero/main.py.

    tiny              the UNTRAINED tiny pi0 / pi0.5 (random weights; the config's pipeline), offline
    reach-tiny        reach-tiny, pi0viz's small trained pi0 (pi0viz.policy.reach_model), offline
    checkpoint:DIR    an openpi checkpoint folder (DIR/params, DIR/assets/<asset_id>/norm_stats.json), JAX
    lerobot:DIR       a LeRobot pi0 / pi0.5 checkpoint folder (save_pretrained output), PyTorch
    hf-pi0:DIR        transformers' own PI0 folder (model + PI0Processor save_pretrained output), PyTorch
    ws://HOST:PORT    a policy server speaking openpi's protocol (`pi0viz serve`), also wss://

`parse_policy_spec(text)` reads a spec (no file system access, no framework import); `load_policy(spec, ...)`
builds the policy, with the options that go with the spec's kind: the named config (pi0.5: `pi05_libero`; pi0-FAST:
`pi0_fast_libero`, pi0viz.policy.fast_policy) for tiny and checkpoint, the tokenizer, asset id and dtype for a
checkpoint (pi0-FAST: also the FAST tokenizer folder), the torch device for LeRobot. A bad spec
or an option that does not go with it is one line (`PolicySpecError`) listing the accepted forms.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pi0viz.errors import ConfigError

KINDS = ("tiny", "reach-tiny", "checkpoint", "lerobot", "hf-pi0", "server")
IN_PROCESS = ("tiny", "reach-tiny", "checkpoint", "lerobot", "hf-pi0")
FORMS = "tiny, reach-tiny, checkpoint:DIR, lerobot:DIR, hf-pi0:DIR, ws://HOST:PORT"
FOLDER_KINDS = ("checkpoint", "lerobot", "hf-pi0")  # the kinds written KIND:DIR
DEFAULT_CONFIG = "pi0_libero"  # pi0viz.policy.configs.DEFAULT_CONFIG, spelled out: parsing never imports JAX
FAST_CONFIG_NAMES = ("pi0_fast_libero",)  # pi0viz.policy.configs.FAST_CONFIGS, spelled out for the same reason


class PolicySpecError(ConfigError):
    """A policy spec that is not one of the accepted forms, or options that do not go with it."""


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec.

    Attributes:
        kind: "tiny", "reach-tiny", "checkpoint", "lerobot", "hf-pi0" or "server".
        path: the folder of "checkpoint", "lerobot" and "hf-pi0"; None otherwise.
        uri: "ws://HOST:PORT" of "server"; None otherwise.
    """

    kind: str
    path: Path | None = None
    uri: str | None = None

    def __str__(self) -> str:
        """The spec as a user writes it (parse_policy_spec(str(spec)) == spec)."""
        if self.kind in FOLDER_KINDS:
            return f"{self.kind}:{self.path}"
        return self.uri if self.kind == "server" else self.kind

    @property
    def in_process(self) -> bool:
        """True when the policy runs in this process (every kind but a server)."""
        return self.kind != "server"



def parse_policy_spec(text: str | PolicySpec) -> PolicySpec:
    """"tiny" | "reach-tiny" | "checkpoint:DIR" | "lerobot:DIR" | "hf-pi0:DIR" | "ws://HOST:PORT" -> PolicySpec.

    Raises:
        PolicySpecError (one line listing the accepted forms) for anything else.
    """
    if isinstance(text, PolicySpec):
        return text
    if not isinstance(text, str):
        raise PolicySpecError(f"policy must be one of {FORMS}, got {type(text).__name__}")
    spec = text.strip()
    if spec in ("tiny", "reach-tiny"):
        return PolicySpec(spec)
    for kind in FOLDER_KINDS:
        if spec.startswith(f"{kind}:"):
            folder = spec[len(kind) + 1:]
            if not folder:
                raise PolicySpecError(f"policy {text!r} names no folder; expected one of {FORMS}")
            return PolicySpec(kind, path=Path(folder).expanduser())
    if spec.startswith(("ws://", "wss://")):
        return PolicySpec("server", uri=_check_uri(text, spec))
    raise PolicySpecError(f"policy {text!r} is not a policy spec; expected one of {FORMS}")


def _check_uri(text: str, uri: str) -> str:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise PolicySpecError(f"policy {text!r} has no valid port; expected one of {FORMS}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PolicySpecError(f"policy {text!r} is not a server address; expected one of {FORMS}")
    return uri


def require_kinds(spec: PolicySpec, kinds: tuple[str, ...], command: str) -> PolicySpec:
    """`spec` when `command` can run its kind, else PolicySpecError saying which forms the command takes."""
    if spec.kind not in kinds:
        forms = ", ".join(_form(k) for k in kinds)
        raise PolicySpecError(f"{command} cannot run policy {str(spec)!r}; it takes {forms}")
    return spec


def _form(kind: str) -> str:
    return f"{kind}:DIR" if kind in FOLDER_KINDS else "ws://HOST:PORT" if kind == "server" else kind


def check_options(spec: PolicySpec, *, config: str | None = None, tokenizer: str | os.PathLike | None = None,
                  asset_id: str | None = None, fast_tokenizer: str | os.PathLike | None = None) -> None:
    """Refuse options that do not go with the spec's kind (one line, PolicySpecError).

    config: a named config for tiny and checkpoint; tokenizer and asset_id: a checkpoint's; fast_tokenizer: a
    pi0-FAST checkpoint's (config pi0_fast_libero).
    """
    if fast_tokenizer is not None and (spec.kind != "checkpoint" or config not in FAST_CONFIG_NAMES):
        raise PolicySpecError(f"a FAST tokenizer goes with policy checkpoint:DIR and a pi0-FAST config "
                              f"({', '.join(FAST_CONFIG_NAMES)}); got policy {str(spec)!r} with config {config!r}")
    if config not in (None, DEFAULT_CONFIG) and spec.kind not in ("tiny", "checkpoint"):
        raise PolicySpecError(f"the config {config!r} goes with policy tiny or checkpoint:DIR; policy {str(spec)!r} "
                              "has its own")
    if tokenizer is not None and spec.kind != "checkpoint":
        raise PolicySpecError(f"a tokenizer goes with policy checkpoint:DIR; policy {str(spec)!r} has its own")
    if asset_id is not None and spec.kind != "checkpoint":
        raise PolicySpecError(f"an asset id goes with policy checkpoint:DIR; policy {str(spec)!r} has its own")


def load_policy(spec: str | PolicySpec, *, config: str | None = None, tokenizer: str | os.PathLike | None = None,
                asset_id: str | None = None, dtype: str = "bfloat16", device: str = "cpu", seed: int = 0,
                fast_tokenizer: str | os.PathLike | None = None) -> Any:
    """The policy a spec names, loaded (slow: JAX or torch start-up and weights).

    Args:
        spec: a spec string or a parsed PolicySpec.
        config: the named config of tiny / checkpoint (pi0_libero by default; pi05_libero: pi0.5).
        tokenizer, asset_id, dtype: a checkpoint's PaliGemma tokenizer, norm-stats asset and compute dtype.
        device: the torch device of a LeRobot or transformers PI0 checkpoint.
        seed: the policy RNG seed of an in-process JAX policy.
        fast_tokenizer: a pi0-FAST checkpoint's FAST tokenizer folder (default: the Hugging Face cache's).
    Returns:
        An object with `infer(obs, *, return_bundle, inference_step, capture) -> {"actions": float32[A,
        action_dims], ...}` and `description`: pi0viz's JAX `Policy` or `FastPolicy` (pi0-FAST: its bundle is a
        DecodeBundle), a `LeRobotPolicy` or an `HFPI0Policy`. A server spec is
        not loaded here (the policy wing does not import the serving wing): connect to `spec.uri` with
        `pi0viz.serving.client.PolicyClient`.
    Raises:
        PolicySpecError for a bad spec or option, or a server spec; CheckpointError for a folder that does not
        hold the checkpoint.
    """
    spec = require_kinds(parse_policy_spec(spec), IN_PROCESS, "loading a policy in process")
    check_options(spec, config=config, tokenizer=tokenizer, asset_id=asset_id, fast_tokenizer=fast_tokenizer)
    if config in FAST_CONFIG_NAMES and spec.kind in ("tiny", "checkpoint"):  # pi0-FAST: FastPolicy (JAX)
        from pi0viz.policy.fast_policy import FastPolicy

        if spec.kind == "tiny":
            return FastPolicy.tiny(seed=seed, policy_config=config)
        return FastPolicy.from_checkpoint(spec.path or Path(), policy_config=config, tokenizer_path=tokenizer,
                                          fast_tokenizer_path=fast_tokenizer, asset_id=asset_id, dtype=dtype)
    if spec.kind == "hf-pi0":  # PyTorch (transformers' PI0): never imports JAX
        from pi0viz.policy.hf_pi0_policy import HFPI0Policy

        return HFPI0Policy.from_pretrained(spec.path or Path(), device=device)
    if spec.kind == "lerobot":  # PyTorch: never imports JAX
        from pi0viz.policy.lerobot_policy import LeRobotPolicy

        return LeRobotPolicy.from_pretrained(spec.path or Path(), device=device)
    if spec.kind == "reach-tiny":
        from pi0viz.policy.reach_model import load_reach_policy

        return load_reach_policy(seed=seed)
    if spec.kind == "checkpoint":
        from pi0viz.policy.reach_model import is_reach_checkpoint, load_reach_policy

        if is_reach_checkpoint(spec.path or Path()):  # a reach-tiny training run (training_runs/reach_tiny_loop)
            if config not in (None, DEFAULT_CONFIG):
                raise PolicySpecError(f"{spec.path} is a reach-tiny checkpoint, which names its own config in "
                                      f"model.json; --config {config} does not apply to it")
            return load_reach_policy(spec.path or Path(), seed=seed)
    from pi0viz.policy.jax_policy import Policy

    if spec.kind == "tiny":
        return Policy.tiny(seed=seed, policy_config=config or DEFAULT_CONFIG)
    return Policy.from_checkpoint(spec.path or Path(), policy_config=config or DEFAULT_CONFIG,
                                  tokenizer_path=tokenizer, asset_id=asset_id, dtype=dtype, seed=seed)


def check_checkpoint(spec: str | PolicySpec, *, config: str | None = None, asset_id: str | None = None) -> None:
    """The checks `Policy.from_checkpoint` makes before it reads any weight, alone: the norm stats of the asset,
    then every parameter's shape and dtype in the checkpoint's metadata against the named config (default
    pi0_libero). For a driver that hands the checkpoint to workers (`pi0viz sweep`): the fault is the same one
    line `demo` and `serve` print, before any worker starts. Imports JAX and orbax (a few seconds); reads no
    weights.

    Raises:
        PolicySpecError unless `spec` is a checkpoint:DIR; CheckpointError (one line) as `Policy.from_checkpoint`.
    """
    from pi0viz.model.checkpoint import check_params
    from pi0viz.policy.configs import get_config
    from pi0viz.policy.norm_stats import load_norm_stats

    spec = require_kinds(parse_policy_spec(spec), ("checkpoint",), "checking a checkpoint")
    if config in FAST_CONFIG_NAMES:
        raise PolicySpecError(f"checking a checkpoint ahead of loading it is for pi0 / pi0.5 configs; a {config} "
                              "checkpoint is checked when it loads (pi0viz serve --config pi0_fast_libero)")
    named = get_config(config or DEFAULT_CONFIG)
    folder = spec.path or Path()
    asset = asset_id or named.asset_id
    if asset is None:
        raise ConfigError(f"config {named.name} names no norm-stats asset; pass the asset id of the checkpoint's "
                          "assets/<asset_id>/norm_stats.json")
    load_norm_stats(folder, asset)
    check_params(folder / "params", named.model)
