"""`pi0viz knockout`: deletion and insertion curves of the action tokens' maps on reach-tiny's held-out scenes
(pi0viz.causal.curves), written as knockout.json, knockout.csv and knockout.png."""

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


@click.command("knockout")
@click.option("--policy", default="reach-tiny", show_default=True, metavar="SPEC",
              help="The policy spec; reach-tiny only for now (its held-out scenes are the observations).")
@click.option("--out", default="pi0viz_knockout", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (knockout.json, knockout.csv, knockout.png).")
@click.option("--examples", type=click.IntRange(1), default=8, show_default=True,
              help="First N examples of the shipped held-out scenes (63 in all).")
@click.option("--steps", default="7", show_default=True,
              help="Denoising steps whose maps are ranked, e.g. '7' or '0-9'.")
@click.option("--layers", default=None, help="Layers whose maps are ranked, e.g. '1-2' (default: all).")
@click.option("--reductions", default="mean,max", show_default=True,
              help="Head reductions of the maps, comma-separated: mean, max, head:N.")
@click.option("--fractions", default="0,5,10,20,40,60,80,100", show_default=True,
              help="Percent of the camera's patches removed (deletion) or restored (insertion).")
@click.option("--draws", type=click.IntRange(1, 100), default=3, show_default=True, help="Random orders per example.")
@click.option("--seed", type=click.IntRange(0, 4294967295), default=0, show_default=True,
              help="Seed of the noise and the random orders.")
def knockout_command(policy: str, out: str, examples: int, steps: str, layers: str | None, reductions: str,
                     fractions: str, draws: int, seed: int) -> None:
    """Deletion and insertion curves: remove the camera's patches in the order of the action tokens' maps and in
    random order, and rank the maps by how much sooner they move the chunk (docs/causal.md)."""
    from pi0viz.core.selection import parse_intervals, parse_selection
    from pi0viz.policy.spec import parse_policy_spec, require_kinds

    require_kinds(parse_policy_spec(policy), ("reach-tiny",), "pi0viz knockout")
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
