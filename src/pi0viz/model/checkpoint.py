"""openpi checkpoints: `<checkpoint>/params` (orbax PyTree, top-level key "params") and
`<checkpoint>/assets/<asset_id>/norm_stats.json`.

openpi writes with orbax-checkpoint 0.11.x; the same OCDBT layout reads with the installed 0.12.x through
`PyTreeCheckpointer` + explicit `ArrayRestoreArgs` (no openpi import needed).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.errors import CheckpointError
from pi0viz.model.config import PALIGEMMA_VOCAB_SIZE, Pi0Config
from pi0viz.model.init import Params, abstract_params, flatten, unflatten

RESTORE_CONCURRENT_GB = 1


def param_shapes(config: Pi0Config) -> dict[str, tuple[int, ...]]:
    """The full parameter tree built abstractly (nothing allocated): '/'-joined path -> shape."""
    return {path: tuple(leaf.shape) for path, leaf in flatten(abstract_params(config)).items()}


def _strip_value_suffix(flat: dict[str, Any]) -> dict[str, Any]:
    """Training-time nnx.State saves add a trailing "value" key to every leaf; openpi strips it when all have it."""
    if flat and all(p.endswith("/value") for p in flat):
        return {p[: -len("/value")]: v for p, v in flat.items()}
    return flat


def _merge_lora(flat: dict[str, Any]) -> dict[str, Any]:
    """Fold LoRA factors into their base weights (W + A @ B * scaling) and drop them.

    openpi's shipped LoRA variants have alpha / rank = 1, so scaling is 1 for the einsums; its FeedForward LoRA
    path never applies a scaling. The merged model equals the LoRA model up to rounding.
    """
    lora = {p for p in flat if "lora" in p.rsplit("/", 1)[-1]}
    if not lora:
        return flat
    out = {p: v for p, v in flat.items() if p not in lora}
    for base in list(out):
        head, _, leaf = base.rpartition("/")
        pairs = [(f"{head}/lora_a", f"{head}/lora_b")] if leaf == "w" else [
            (f"{head}/{leaf}_lora_a", f"{head}/{leaf}_lora_b")]
        for a_path, b_path in pairs:
            if a_path in flat and b_path in flat:
                w = out[base]
                a = jnp.asarray(flat[a_path], jnp.float32)
                b = jnp.asarray(flat[b_path], jnp.float32)
                out[base] = (jnp.asarray(w, jnp.float32) + a @ b).astype(w.dtype)
    warnings.warn(f"merged {len(lora)} LoRA factor leaves into their base weights (scaling 1, as openpi's "
                  f"shipped LoRA variants)", stacklevel=3)
    return out


def load_params(params_dir: str | os.PathLike, *, dtype: str | jnp.dtype | None = None,
                config: Pi0Config | None = None) -> Params:
    """Restore `<checkpoint>/params` as a nested dict of jax arrays with openpi's paths.

    Args:
        params_dir: the orbax PyTree checkpoint folder (openpi's `<checkpoint>/params`).
        dtype: cast every leaf to this dtype while reading (e.g. "bfloat16" for inference as openpi does);
            None keeps the stored dtype. The cast happens per array inside tensorstore, so a float32 checkpoint
            never exists in memory in float32 next to its bfloat16 copy.
        config: when given, every parameter's shape and dtype in the checkpoint's metadata is compared with the
            config before anything is read (a tiny checkpoint under the full-size config fails here, naming the
            parameter, both shapes and the config the checkpoint does fit).
    Returns:
        the tree under the top-level "params" key (trailing "value" keys stripped, LoRA factors merged).
    Raises:
        CheckpointError naming the path: not a checkpoint, unreadable (truncated, corrupted) files, a shape or
        dtype that disagrees with `config`, or a non-finite parameter after loading.
    """
    import orbax.checkpoint as ocp

    ckptr, path, tree = _metadata(params_dir, config)
    item = {"params": tree["params"]}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    jdtype = None if dtype is None else jnp.dtype(dtype)
    restore_args = jax.tree.map(
        lambda _: ocp.ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding, dtype=jdtype), item
    )
    try:
        restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args))["params"]
    except Exception as err:  # truncated or corrupted data files: tensorstore/orbax errors of many types
        raise CheckpointError(f"{path}: cannot read the parameters, the checkpoint's files are truncated or "
                              f"corrupted ({_first_line(err)})") from None
    flat = _merge_lora(_strip_value_suffix(flatten(restored)))
    for name, leaf in flat.items():
        if not bool(jnp.isfinite(leaf).all()):
            raise CheckpointError(f"{path}: parameter {name} holds non-finite values (NaN or inf); the checkpoint "
                                  "is corrupted or was saved from a diverged run")
    return unflatten(flat)


def check_params(params_dir: str | os.PathLike, config: Pi0Config) -> Path:
    """The checks `load_params(params_dir, config=config)` makes before it reads any array, alone: the folder is
    an orbax PyTree checkpoint with openpi's top-level "params" key, and every parameter's shape and dtype in its
    metadata fits `config`. Cheap (metadata only; no weights are read), for a driver that checks a checkpoint
    before handing it to workers (`pi0viz sweep`). Returns the params folder.

    Raises:
        CheckpointError with the same one line `load_params` gives.
    """
    return _metadata(params_dir, config)[1]


def _metadata(params_dir: str | os.PathLike, config: Pi0Config | None) -> tuple[Any, Path, dict[str, Any]]:
    """(checkpointer, params folder, metadata tree) after the checks of `load_params` that need no array."""
    import orbax.checkpoint as ocp

    path = Path(params_dir).expanduser().absolute()
    if (path / "params").is_dir() and not (path / "_METADATA").exists():
        path = path / "params"  # given the checkpoint folder itself
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint parameters at {path} (expected openpi's <checkpoint>/params folder)")
    if not (path / "_METADATA").exists():
        raise CheckpointError(f"{path} is not an orbax PyTree checkpoint: no _METADATA file (expected openpi's "
                              "<checkpoint>/params folder)")
    # Bound the bytes in flight while restoring (orbax's default is 96 GB, i.e. everything at once), so the
    # transient read buffers stay near one large array.
    ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=RESTORE_CONCURRENT_GB))
    try:
        metadata = ckptr.metadata(path)
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({_first_line(err)})") from None
    tree = getattr(metadata, "item_metadata", metadata)  # orbax >= 0.12 wraps the tree in StepMetadata
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict) or "params" not in tree:
        found = list(tree) if isinstance(tree, dict) else "no readable tree"
        raise CheckpointError(f"{path}: expected a top-level key 'params' (openpi layout), found {found}")
    if config is not None:
        check_against_config(path, _strip_value_suffix(flatten(tree["params"])), config)
    return ckptr, path, tree


def check_against_config(path: Path, stored: dict[str, Any], config: Pi0Config) -> None:
    """Compare the checkpoint's parameters (metadata leaves with .shape and .dtype) with `config`'s tree.

    Raises CheckpointError for a missing or unexpected parameter, a shape mismatch or a non-float dtype; the
    message names the parameter, both shapes, and a known config the checkpoint fits, if any.
    """
    for name, leaf in stored.items():
        kind = "f" if str(leaf.dtype).startswith("bfloat16") else np.dtype(leaf.dtype).kind
        if kind != "f":
            raise CheckpointError(f"{path}: parameter {name} is stored as {leaf.dtype}; expected a floating dtype "
                                  f"(float32 or bfloat16, cast to {config.dtype} on load)")
    want = param_shapes(config)
    have = {p: tuple(leaf.shape) for p, leaf in stored.items() if "lora" not in p.rsplit("/", 1)[-1]}
    fits = _fitting_config(have, exclude=config)
    hint = f"; the checkpoint fits {fits}" if fits else ""
    for name, shape in want.items():
        if name not in have:
            raise CheckpointError(f"{path}: parameter {name} is missing (config expects shape {list(shape)}){hint}")
        if have[name] != shape:
            raise CheckpointError(f"{path}: parameter {name}: checkpoint has shape {list(have[name])}, config "
                                  f"expects {list(shape)} ({_describe(config)}){hint}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(f"{path}: {len(extra)} parameters the config does not have, e.g. {extra[0]} "
                              f"({_describe(config)}){hint}")


def _describe(config: Pi0Config) -> str:
    return (f"{config.paligemma_variant} + {config.action_expert_variant}, SigLIP {config.siglip_variant}, "
            f"vocab {config.vocab_size}, horizon {config.action_horizon}")


def _known_configs(vocab_size: int) -> dict[str, Pi0Config]:
    """Model shapes a checkpoint is commonly written for, by how a user would ask for them."""
    out: dict[str, Pi0Config] = {}
    candidates = {
        "the full-size pi0 (Pi0Config.pi0())": lambda: Pi0Config.pi0(),
        f"the tiny pi0 (config=Pi0Config.tiny(vocab_size={vocab_size}))": lambda: Pi0Config.tiny(vocab_size=vocab_size),
    }
    for name, make in candidates.items():
        try:
            out[name] = make()
        except Exception:  # a variant this build cannot construct
            continue
    return out


def _fitting_config(have: dict[str, tuple[int, ...]], exclude: Pi0Config) -> str | None:
    embed = have.get("PaliGemma/llm/embedder/input_embedding")
    vocab = embed[0] if embed else PALIGEMMA_VOCAB_SIZE
    for name, config in _known_configs(vocab).items():
        if config == exclude:
            continue
        if param_shapes(config) == have:
            return name
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = (text[0] if text else "").split(" See full TensorStore details")[0]
    return f"{type(err).__name__}: {line[:200]}"


def save_params(params: Params, params_dir: str | os.PathLike) -> None:
    """Write `params` as an openpi-style `<checkpoint>/params` folder (orbax PyTree, top-level key "params")."""
    import orbax.checkpoint as ocp

    path = Path(params_dir).absolute()
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(path, {"params": params})
    if hasattr(ckptr, "wait_until_finished"):
        ckptr.wait_until_finished()
