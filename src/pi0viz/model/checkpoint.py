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

from pi0viz.model.config import Pi0Config
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


def load_params(params_dir: str | os.PathLike, *, dtype: str | jnp.dtype | None = None) -> Params:
    """Restore `<checkpoint>/params` as a nested dict of jax arrays with openpi's paths.

    Args:
        params_dir: the orbax PyTree checkpoint folder (openpi's `<checkpoint>/params`).
        dtype: cast every leaf to this dtype while reading (e.g. "bfloat16" for inference as openpi does);
            None keeps the stored dtype. The cast happens per array inside tensorstore, so a float32 checkpoint
            never exists in memory in float32 next to its bfloat16 copy.
    Returns:
        the tree under the top-level "params" key (trailing "value" keys stripped, LoRA factors merged).
    """
    import orbax.checkpoint as ocp

    path = Path(params_dir).expanduser().absolute()
    if (path / "params").is_dir() and not (path / "_METADATA").exists():
        path = path / "params"  # given the checkpoint folder itself
    if not (path / "_METADATA").exists() and not (path / "manifest.ocdbt").exists():
        raise FileNotFoundError(f"{path} is not an orbax PyTree checkpoint (expected openpi's <checkpoint>/params)")
    # Bound the bytes in flight while restoring (orbax's default is 96 GB, i.e. everything at once), so the
    # transient read buffers stay near one large array.
    ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=RESTORE_CONCURRENT_GB))
    metadata = ckptr.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)  # orbax >= 0.12 wraps the tree in StepMetadata
    tree = getattr(tree, "tree", tree)
    if "params" not in tree:
        raise ValueError(f"{path}: expected a top-level key 'params' (openpi layout), found {list(tree)}")
    item = {"params": tree["params"]}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    jdtype = None if dtype is None else jnp.dtype(dtype)
    restore_args = jax.tree.map(
        lambda _: ocp.ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding, dtype=jdtype), item
    )
    restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args))["params"]
    flat = _merge_lora(_strip_value_suffix(flatten(restored)))
    return unflatten(flat)


def save_params(params: Params, params_dir: str | os.PathLike) -> None:
    """Write `params` as an openpi-style `<checkpoint>/params` folder (orbax PyTree, top-level key "params")."""
    import orbax.checkpoint as ocp

    path = Path(params_dir).absolute()
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(path, {"params": params})
    if hasattr(ckptr, "wait_until_finished"):
        ckptr.wait_until_finished()
