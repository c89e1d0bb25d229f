"""`pi0viz knockout`: two studies of what the actions depend on (docs/causal.md).

- Key sets on one observation, any JAX policy (`--remove`, or `--observation` / `--bundle`, or a policy other than
  reach-tiny): pi0viz.causal.study, written as knockouts.json, knockouts.csv and knockouts.png.
- Deletion and insertion curves of the action tokens' maps on reach-tiny's held-out scenes (reach-tiny with none of
  those options): pi0viz.causal.curves, written as knockout.json, knockout.csv and knockout.png.

`--prefix-attention` also captures the prefix's own attention of the unmodified call (pi0viz.prefix/1 side file,
pi0viz.render.prefix tree)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import click

from pi0viz.errors import ConfigError

KNOCKOUT_FILES = ("knockout.json", "knockout.csv", "knockout.png")
PLOTTED_MAPS = 4  # curves of the best maps drawn (the table lists them all)


def _fractions(text: str) -> list[float]:
    """"0,5,10,...,100" (percent) -> [0.0, 0.05, ...]; ConfigError (one line) for anything else."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--fractions {text!r}: expected percentages 0..100, comma-separated") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise ConfigError(f"--fractions {text!r}: expected percentages 0..100, comma-separated")
    return sorted({v / 100 for v in values})


def _reductions(text: str) -> list[str]:
    from pi0viz.causal.curves import parse_reduction

    names = [r.strip() for r in text.split(",")]
    for r in names:
        try:
            parse_reduction(r)
        except ValueError as err:
            raise ConfigError(f"--reductions: {err}") from None
    return list(dict.fromkeys(names))


def knockout_csv(result: dict[str, Any]) -> str:
    """One row per map and curve point (and random's): map, curve, fraction, mean, se, then the map's areas and
    gaps (text cells escaped by core.tables)."""
    from pi0viz.core.tables import csv_text, number_cell, text_cell

    header = ["map", "rank", "curve", "fraction", "mean", "se", "deletion_gap", "deletion_gap_se", "insertion_gap",
              "insertion_gap_se"]
    rows = []
    entries = [(name, result["maps"][name], result["ranking"].index(name) + 1) for name in result["ranking"]]
    entries.append(("random", result["random"], None))
    for name, entry, rank in entries:
        gaps = [number_cell(entry[g][k]) if g in entry else "" for g in ("deletion_gap", "insertion_gap")
                for k in ("mean", "se")]
        for curve in ("deletion", "insertion"):
            for f, point in zip(result["fractions"], entry[curve]):
                rows.append([text_cell(name), number_cell(rank), curve, number_cell(f), number_cell(point["mean"]),
                             number_cell(point["se"]), *gaps])
    return csv_text(header, rows)


def knockout_png(result: dict[str, Any]) -> bytes:
    """Deletion and insertion curves of the best maps against random order (mean +- se), and every map's deletion
    gap (the faithfulness number, +- se), as one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    x = 100 * np.asarray(result["fractions"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, curve in zip(axes[:2], ("deletion", "insertion")):
        for name in [*result["ranking"][:PLOTTED_MAPS], "random"]:
            entry = result["random"] if name == "random" else result["maps"][name]
            mean = np.array([p["mean"] for p in entry[curve]])
            se = np.array([p["se"] for p in entry[curve]])
            style = dict(color="0.4", linestyle="--") if name == "random" else {}
            ax.plot(x, mean, marker="o", ms=3, label=name, **style)
            ax.fill_between(x, mean - se, mean + se, alpha=0.15, **({"color": "0.4"} if name == "random" else {}))
        ax.set_title(f"{curve} ({result['camera']} patches in map order)")
        ax.set_xlabel("patches removed (%)" if curve == "deletion" else "patches restored (%)")
        ax.set_ylabel(result["measure"].split(" against")[0])
        ax.legend(fontsize=7)
    names = result["ranking"]
    gap = [result["maps"][n]["deletion_gap"] for n in names]
    axes[2].barh(range(len(names)), [g["mean"] for g in gap], xerr=[g["se"] for g in gap], color="#3b75af")
    axes[2].set_yticks(range(len(names)), names, fontsize=7)
    axes[2].invert_yaxis()
    axes[2].axvline(0, color="0.3", lw=0.8)
    axes[2].set_title("faithfulness: deletion area - random's")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_knockout(result: dict[str, Any], out: str | Path) -> list[Path]:
    """knockout.json, knockout.csv and knockout.png in `out`, replaced together (core.writes)."""
    from pi0viz.core.writes import replace_together

    out = Path(out)
    return replace_together([(out / "knockout.json", json.dumps(result, indent=1, allow_nan=False) + "\n"),
                             (out / "knockout.csv", knockout_csv(result)),
                             (out / "knockout.png", knockout_png(result))], hint="pi0viz knockout --out")


# -- the key-set study (pi0viz.causal.study) -------------------------------------------------------------------

STUDY_FILES = ("knockouts.json", "knockouts.csv", "knockouts.png")
REMOVE_FORMS = ("camera:NAME, mask:FILE[#OBJECT], top:K, bottom:K, prompt:I,J,..., text:PIECE (or object, "
                "reach-tiny's shipped scene)")


def study_csv(result: dict[str, Any]) -> str:
    """One row per condition: set, method, route, layer, camera, k, mean, se, random mean, random se, ratio."""
    from pi0viz.core.tables import csv_text, number_cell, text_cell

    header = ["set", "method", "route", "layer", "camera", "k", "mean_abs_delta", "se", "random_mean", "random_se",
              "ratio"]
    rows = []
    for c in result["conditions"]:
        rand = c["random"] or {}
        rows.append([text_cell(c["set"]), c["method"], c["route"], number_cell(c["layer"]),
                     text_cell(c["camera"] or ""), number_cell(c["k"]), number_cell(c["mean_abs_delta"]["mean"]),
                     number_cell(c["mean_abs_delta"]["se"]), number_cell(rand.get("mean")),
                     number_cell(rand.get("se")), number_cell(c["ratio"])])
    return csv_text(header, rows)


def study_png(result: dict[str, Any]) -> bytes:
    """Left: the action shift of every condition in every layer (route, or pixels), against its random baseline
    (grey), mean +- se; right: the shift per layer of each set and route (when layers were measured one by one)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    whole = [c for c in result["conditions"] if c["layer"] is None]
    layered = [c for c in result["conditions"] if c["layer"] is not None]
    fig, axes = plt.subplots(1, 2 if layered else 1, figsize=(14 if layered else 8, max(3, 0.35 * len(whole) + 1.5)),
                             squeeze=False)
    ax = axes[0, 0]
    y = np.arange(len(whole))
    ax.barh(y, [c["mean_abs_delta"]["mean"] for c in whole], xerr=[c["mean_abs_delta"]["se"] for c in whole],
            height=0.4, color=["#c8553d" if c["method"] == "pixels" else "#3b75af" for c in whole], label="removed")
    rand = [(c["random"] or {"mean": 0.0, "se": 0.0}) for c in whole]
    ax.barh(y + 0.4, [r["mean"] for r in rand], xerr=[r["se"] for r in rand], height=0.4, color="0.7",
            label=f"random ({result['random_draws']} draws)")
    ax.set_yticks(y + 0.2, [f"{c['set']} | {c['method'] if c['method'] == 'pixels' else c['route']}" for c in whole],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean |delta action| (robot units)")
    ax.set_title("action shift per condition (blue: key masking, red: pixel replacement)", fontsize=9)
    ax.legend(fontsize=7)
    if layered:
        ax = axes[0, 1]
        for (name, route) in dict.fromkeys((c["set"], c["route"]) for c in layered):
            pts = sorted((c["layer"], c["mean_abs_delta"]["mean"], c["mean_abs_delta"]["se"]) for c in layered
                         if c["set"] == name and c["route"] == route)
            x, m, s = (np.array(v) for v in zip(*pts))
            ax.errorbar(x, m, yerr=s, marker="o", ms=3, capsize=2, label=f"{name} | {route}")
        ax.set_xlabel("layer (keys removed in this layer only)")
        ax.set_ylabel("mean |delta action|")
        ax.set_title("action shift per layer", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_study(result: dict[str, Any], out: str | Path, extra: list[tuple[Path, bytes]] = ()) -> list[Path]:
    """knockouts.json, knockouts.csv and knockouts.png in `out`, replaced together (core.writes)."""
    from pi0viz.core.writes import replace_together

    out = Path(out)
    return replace_together([(out / "knockouts.json", json.dumps(result, indent=1, allow_nan=False) + "\n"),
                             (out / "knockouts.csv", study_csv(result)), (out / "knockouts.png", study_png(result)),
                             *extra], hint="pi0viz knockout --out")


def _mask_patches(spec: str, grid: int, camera_names: list[str], camera: str) -> tuple[Any, str]:
    """bool[grid * grid] patches of a masks file (pi0viz.masks/1: the union of the objects, or #OBJECT, on
    `camera`; coverage > 0) or of a plain .npz holding one bool/number [grid, grid] array (nonzero = masked)."""
    import numpy as np

    from pi0viz.core.npzfile import load_npz
    from pi0viz.errors import Pi0vizError

    path, _, obj = spec.partition("#")
    try:
        arrays = load_npz(path)
    except (Pi0vizError, OSError) as err:
        raise ConfigError(f"--remove mask:{spec}: {str(err).splitlines()[0]}") from None
    if "format" in arrays:
        from pi0viz.analysis.masks import masks_from_arrays

        try:
            masks = masks_from_arrays(arrays, source=path)
            union = masks.union([obj] if obj else None)
        except Pi0vizError as err:
            raise ConfigError(f"--remove mask:{spec}: {err}") from None
        if camera not in masks.camera_names:
            raise ConfigError(f"--remove mask:{spec}: the masks hold cameras {masks.camera_names}, not {camera!r}")
        patches = union[masks.camera_names.index(camera)] > 0
        label = f"mask {Path(path).name}{'#' + obj if obj else ''}"
    else:
        values = [a for a in arrays.values() if a.shape == (grid, grid)]
        if len(values) != 1 or obj:
            raise ConfigError(f"--remove mask:{spec}: expected a pi0viz.masks/1 file or an .npz with one "
                              f"[{grid}, {grid}] array (nonzero = the patches)")
        patches = np.asarray(values[0]) != 0
        label = f"mask {Path(path).name}"
    if not patches.any():
        raise ConfigError(f"--remove mask:{spec}: the mask covers no patch of {camera}")
    return patches.reshape(-1), label


def _key_sets(removes: tuple[str, ...], policy: Any, inputs: Any, observation: Any, camera: str, scores: Any,
              map_label: str, named: Any) -> list[Any]:
    """--remove values -> KeySets (ConfigError, one line, for a bad one)."""
    import math

    import numpy as np

    from pi0viz.causal.knockout import prompt_keys
    from pi0viz.causal.observation import prompt_slots
    from pi0viz.causal.study import KeySet, camera_set, map_key_set, mask_set

    cfg = policy.config
    sets = []
    for item in removes:
        kind, _, value = item.partition(":")
        if kind == "camera":
            if value not in cfg.image_keys:
                raise ConfigError(f"--remove {item}: the model's cameras are {', '.join(cfg.image_keys)}")
            sets.append(camera_set(cfg, value))
        elif kind in ("top", "bottom"):
            if not value.isdigit() or not 1 <= int(value) <= cfg.num_image_tokens:
                raise ConfigError(f"--remove {item}: expected {kind}:K, K in 1..{cfg.num_image_tokens}")
            sets.append(map_key_set(scores, cfg, camera, int(value), top=kind == "top", label=map_label))
        elif kind == "mask":
            patches, label = _mask_patches(value, math.isqrt(cfg.num_image_tokens), list(cfg.image_keys), camera)
            sets.append(mask_set(cfg, camera, patches, label))
        elif kind == "object" and not value:
            if named is None:
                raise ConfigError("--remove object: only reach-tiny's shipped scene names an object; use mask:FILE")
            sets.append(mask_set(cfg, camera, named.reshape(-1), "named object"))
        elif kind == "prompt":
            valid = np.flatnonzero(inputs.token_mask)
            try:
                slots = [int(v) for v in value.split(",")]
            except ValueError:
                slots = None
            if not slots or any(s not in valid for s in slots):
                raise ConfigError(f"--remove {item}: expected prompt slots among {valid.min()}..{valid.max()} "
                                  f"(comma-separated)")
            sets.append(KeySet(f"prompt slots {value}", prompt_keys(cfg, slots)))
        elif kind == "text":
            pieces = policy.tokenizer.pieces(inputs.token_ids, inputs.token_mask)
            slots = prompt_slots(list(pieces), inputs.token_mask, value)
            if not slots:
                raise ConfigError(f"--remove {item}: no prompt token contains {value!r} (the prompt: "
                                  f"{inputs.prompt!r})")
            sets.append(KeySet(f"prompt '{value}'", prompt_keys(cfg, slots)))
        else:
            raise ConfigError(f"--remove {item!r}: expected one of {REMOVE_FORMS}")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ConfigError("--remove: the same key set is named twice")
    return sets


def run_study_command(*, policy_spec: str, config: str, tokenizer: Path | None, asset_id: str | None, dtype: str,
                      observation: Path | None, bundle: Path | None, state: str | None, removes: tuple[str, ...],
                      camera: str | None, map_step: int | None, map_layer: int | None, map_heads: str, where: str,
                      per_layer: bool, methods: str, draws: int, noise_draws: int, seed: int, out: str,
                      prefix_attention: bool) -> None:
    """`pi0viz knockout` on one observation (module docstring)."""
    from pi0viz.causal.curves import parse_reduction
    from pi0viz.causal.observation import (bundle_observation, load_observation, parse_state,
                                           shipped_observation)
    from pi0viz.causal.study import METHODS, knockout_study, parse_places, unmodified_map
    from pi0viz.policy.spec import check_options, load_policy, parse_policy_spec, require_kinds

    spec = require_kinds(parse_policy_spec(policy_spec), ("tiny", "reach-tiny", "checkpoint"), "pi0viz knockout")
    if "fast" in config:
        raise ConfigError(f"--config {config}: pi0viz knockout runs pi0 and pi0.5 (the flow sampler), not pi0-FAST")
    check_options(spec, config=config, tokenizer=tokenizer, asset_id=asset_id)
    if observation is not None and bundle is not None:
        raise ConfigError("--observation and --bundle exclude each other: give one observation")
    if state is not None and bundle is None:
        raise ConfigError("--state goes with --bundle (an observation file holds its own state)")
    method_list = [m.strip() for m in methods.split(",")]
    if not method_list or any(m not in METHODS for m in method_list):
        raise ConfigError(f"--method {methods!r}: expected keys, pixels or keys,pixels")
    try:
        parse_reduction(map_heads)
    except ValueError as err:
        raise ConfigError(f"--map-heads: {err}") from None
    named = None
    if bundle is not None:
        obs, source = bundle_observation(bundle, None if state is None else parse_state(state)), f"bundle {bundle}"
    elif observation is not None:
        obs, source = load_observation(observation), f"observation {observation}"
    else:  # a reach-tiny model (the shipped one or a training run's checkpoint:DIR): its held-out scene
        from pi0viz.policy.reach_model import is_reach_checkpoint

        reach = spec.kind == "reach-tiny" or (spec.kind == "checkpoint" and is_reach_checkpoint(spec.path or Path()))
        obs, source, named = shipped_observation("reach-tiny" if reach else spec.kind)

    from pi0viz.errors import Pi0vizError
    from pi0viz.policy.jax_policy import to_observation

    policy = load_policy(spec, config=config, tokenizer=tokenizer, asset_id=asset_id, dtype=dtype, seed=seed)
    cfg = policy.config
    try:
        inputs = policy.prepare(obs)
    except Pi0vizError as err:
        raise ConfigError(f"{source}: {str(err).splitlines()[0]}") from None
    model_obs = to_observation(inputs)
    camera = camera or cfg.image_keys[0]
    if camera not in cfg.image_keys:
        raise ConfigError(f"--camera {camera}: the model's cameras are {', '.join(cfg.image_keys)}")
    steps = policy.num_steps
    map_step = steps - 1 if map_step is None else map_step
    map_layer = cfg.llm.depth - 1 if map_layer is None else map_layer
    if map_step >= steps:
        raise ConfigError(f"--map-step {map_step}: the sampler has {steps} denoising steps (0..{steps - 1})")
    if map_layer >= cfg.llm.depth:
        raise ConfigError(f"--map-layer {map_layer}: the model has {cfg.llm.depth} layers (0..{cfg.llm.depth - 1})")
    head = parse_reduction(map_heads)
    heads = cfg.llm.num_heads
    if isinstance(head, int) and head >= heads:
        raise ConfigError(f"--map-heads {map_heads}: the model has {heads} query heads (head:0..head:{heads - 1})")
    try:
        places = parse_places(where, cfg.llm.depth, per_layer)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    removes = removes or (("object",) if named is not None else ()) + ("top:16", "bottom:16")
    need_map = any(r.startswith(("top:", "bottom:")) for r in removes)
    scores = unmodified_map(policy, model_obs, camera, map_step, map_layer, map_heads, seed) if need_map else None
    map_label = f"step {map_step}, layer {map_layer}, {map_heads}"
    sets = _key_sets(tuple(removes), policy, inputs, model_obs, camera, scores, map_label, named)
    result = knockout_study(policy, model_obs, sets, places=places, methods=method_list, draws=draws,
                            noise_draws=noise_draws, seed=seed)
    result.update({"policy": str(spec), "model": policy.description, "observation": source,
                   "prompt": inputs.prompt, "camera": camera,
                   "map": {"step": map_step, "layer": map_layer, "heads": map_heads, "rows": "action tokens"}})
    extra = []
    if prefix_attention:
        from pi0viz.causal.prefix import capture_prefix
        from pi0viz.core.prefix_bundle import prefix_path, save_prefix
        from pi0viz.render.prefix import render_prefix

        prefix = capture_prefix(policy, inputs)
        side = prefix_path(bundle) if bundle is not None else Path(out) / "prefix.npz"
        save_prefix(prefix, side)
        files = render_prefix(prefix, out)
        result["prefix_attention"] = {"file": str(side), "images": len(files)}
        click.echo(f"prefix attention: {side} and {len(files)} images under {Path(out) / 'prefix_attention'}")
    written = write_study(result, out, extra)
    click.echo(f"{source}; prompt {inputs.prompt!r}; {result['rows']} rows "
               f"({result['noise_draws']} noise draws); {result['measure'].split(' against')[0]}:")
    for c in result["conditions"]:
        place = "pixels" if c["method"] == "pixels" else (c["route"] if c["layer"] is None else
                                                          f"{c['route']}, layer {c['layer']}")
        m = c["mean_abs_delta"]
        rand = "" if c["random"] is None else (f"   random {c['random']['mean']:.4f} +- {c['random']['se']:.4f}"
                                                + (f"   x{c['ratio']:.1f}" if c["ratio"] else ""))
        click.echo(f"  {c['set']} | {place}: {m['mean']:.4f} +- {m['se']:.4f}{rand}")
    click.echo(f"knockout: {written[0].parent}")


from pi0viz.serving.cli import CONFIG_NAMES  # noqa: E402 - one list of named configs for every command


@click.command("knockout")
@click.option("--policy", default="reach-tiny", show_default=True, metavar="SPEC",
              help="The policy spec: reach-tiny, tiny or checkpoint:DIR (pi0 and pi0.5, JAX).")
@click.option("--config", "config_name", type=click.Choice(CONFIG_NAMES), default="pi0_libero", show_default=True,
              help="Named policy config for tiny / checkpoint:DIR (pi05_libero: pi0.5).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PaliGemma's paligemma_tokenizer.model (with checkpoint:DIR).")
@click.option("--asset-id", default=None, help="Norm stats under <checkpoint>/assets/<asset-id>/ (default: the config's).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Compute dtype for a checkpoint.")
@click.option("--observation", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A saved policy request (pi0viz.observation/1 .npz) to run the key sets on.")
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A capture bundle whose images and prompt are the observation (state: NAME.observation.npz "
                   "next to it, or --state).")
@click.option("--state", default=None, help="The robot state of a --bundle's call, comma-separated numbers.")
@click.option("--remove", multiple=True, metavar="SET",
              help=f"A key set to remove (repeat): {REMOVE_FORMS}.")
@click.option("--camera", default=None, help="Camera of mask / top / bottom sets (default: the model's first).")
@click.option("--map-step", type=click.IntRange(0), default=None,
              help="Denoising step of the map top / bottom sets rank by (default: the last).")
@click.option("--map-layer", type=click.IntRange(0), default=None,
              help="Layer of that map (default: the last).")
@click.option("--map-heads", default="mean", show_default=True, help="Head reduction of that map: mean, max, head:N.")
@click.option("--where", default="all,prefix,expert", show_default=True,
              help="Where keys are removed: all, prefix, expert, image (the prefix's image-token queries only), "
                   "each optionally @LAYER, comma-separated.")
@click.option("--per-layer", is_flag=True, help="Also remove the keys in each layer alone, for every route of --where.")
@click.option("--method", "methods", default="keys,pixels", show_default=True,
              help="keys (masking in the attention), pixels (paint the patches with the image mean), or both.")
@click.option("--noise-draws", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Noise draws per condition (the standard errors of a set's shift).")
@click.option("--prefix-attention", is_flag=True,
              help="Also capture the prefix's own attention of the unmodified call: a pi0viz.prefix/1 side file "
                   "(next to --bundle, else OUT/prefix.npz) and its prefix_attention/ tree in OUT.")
@click.option("--out", default="pi0viz_knockout", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (knockout.json/.csv/.png, or knockouts.json/.csv/.png for key sets).")
@click.option("--examples", type=click.IntRange(1), default=8, show_default=True,
              help="Curves: first N examples of the shipped held-out scenes (63 in all).")
@click.option("--steps", default="7", show_default=True,
              help="Curves: denoising steps whose maps are ranked, e.g. '7' or '0-9'.")
@click.option("--layers", default=None, help="Curves: layers whose maps are ranked, e.g. '1-2' (default: all).")
@click.option("--reductions", default="mean,max", show_default=True,
              help="Curves: head reductions of the maps, comma-separated: mean, max, head:N.")
@click.option("--fractions", default="0,5,10,20,40,60,80,100", show_default=True,
              help="Curves: percent of the camera's patches removed (deletion) or restored (insertion).")
@click.option("--draws", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Random orders per example (curves) or random sets per condition (key sets).")
@click.option("--seed", type=click.IntRange(0, 4294967295), default=0, show_default=True,
              help="Seed of the noise and the random orders or sets.")
def knockout_command(policy: str, config_name: str, tokenizer: Path | None, asset_id: str | None, dtype: str,
                     observation: Path | None, bundle: Path | None, state: str | None, remove: tuple[str, ...],
                     camera: str | None, map_step: int | None, map_layer: int | None, map_heads: str, where: str,
                     per_layer: bool, methods: str, noise_draws: int, prefix_attention: bool, out: str,
                     examples: int, steps: str, layers: str | None, reductions: str, fractions: str, draws: int,
                     seed: int) -> None:
    """Does the attention matter? Remove key sets (a camera, a mask, the top / bottom of a map, prompt tokens) from
    the attention of any JAX policy on one observation and measure the action shift against matched random sets;
    or, with reach-tiny and no observation or --remove, rank the action tokens' maps by deletion and insertion
    curves on its held-out scenes (docs/causal.md)."""
    from pi0viz.policy.spec import parse_policy_spec

    spec = parse_policy_spec(policy)
    curves = spec.kind == "reach-tiny" and not remove and observation is None and bundle is None and \
        state is None and not prefix_attention
    if not curves:
        run_study_command(policy_spec=policy, config=config_name, tokenizer=tokenizer, asset_id=asset_id, dtype=dtype,
                          observation=observation, bundle=bundle, state=state, removes=remove, camera=camera,
                          map_step=map_step, map_layer=map_layer, map_heads=map_heads, where=where,
                          per_layer=per_layer, methods=methods, draws=draws, noise_draws=noise_draws, seed=seed,
                          out=out, prefix_attention=prefix_attention)
        return
    from pi0viz.core.selection import parse_intervals, parse_selection

    fracs, reds = _fractions(fractions), _reductions(reductions)
    parse_intervals(steps, "--steps")
    parse_intervals(layers, "--layers")

    from pi0viz.causal.curves import reach_faithfulness
    from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy

    scenes, loaded = heldout_scenes(), load_reach_policy()
    if examples > len(scenes.examples):
        raise ConfigError(f"--examples {examples}: the held-out scenes have {len(scenes.examples)}")
    cfg = loaded.config
    step_ids = parse_selection(steps, range(10), "--steps", within="reach-tiny's 10 denoising steps")
    layer_ids = parse_selection(layers, range(cfg.llm.depth), "--layers", within=f"reach-tiny's {cfg.llm.depth} layers")
    heads = cfg.llm.num_heads
    for r in reds:
        if r.startswith("head:") and int(r[5:]) >= heads:
            raise ConfigError(f"--reductions {r}: reach-tiny has {heads} query heads (head:0..head:{heads - 1})")
    result = reach_faithfulness(loaded, scenes, scenes.examples[:examples], steps=step_ids, layers=layer_ids,
                                reductions=reds, fractions=fracs, draws=draws, seed=seed)
    written = write_knockout(result, out)
    click.echo(f"{result['examples']} examples, {len(result['maps'])} maps; most faithful first (deletion gap, "
               f"{result['measure'].split(' against')[0]}):")
    for name in result["ranking"][:8]:
        g = result["maps"][name]["deletion_gap"]
        click.echo(f"  {name}: {g['mean']:.2f} +- {g['se']:.2f}")
    click.echo(f"knockout: {written[0].parent}")
