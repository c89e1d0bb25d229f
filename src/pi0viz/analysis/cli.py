"""`pi0viz metrics BUNDLES...` and `pi0viz report RUN_DIR`: parse, call the library, one line on bad input."""

from __future__ import annotations

import click

from pi0viz.analysis.sinks import SinkCriterion


@click.command("metrics")
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--masks", "masks_dir", default=None, type=click.Path(file_okay=False),
              help="Folder of NAME.masks.npz files (default: next to each bundle NAME.npz).")
@click.option("--require-masks", is_flag=True, help="Fail when a bundle has no masks (default: sinks and masses only).")
@click.option("--sink-min", type=click.FloatRange(0, 1, min_open=True), default=SinkCriterion.min_value,
              show_default=True, help="Sink: fused probability a key reaches in a row.")
@click.option("--sink-rows", type=click.FloatRange(0, 1, min_open=True), default=SinkCriterion.row_fraction,
              show_default=True, help="Sink: share of the action rows of a (step, layer) where it does (pi0-FAST: "
                                      "of the decode steps of a layer).")
@click.option("--no-csv", is_flag=True, help="Skip the per-cell grounding CSV.")
def metrics_command(bundles: tuple[str, ...], masks_dir: str | None, require_masks: bool, sink_min: float,
                    sink_rows: float, no_csv: bool) -> None:
    """Sinks, region masses and grounding metrics of saved capture bundles (files, or a bundles, episode, run or
    sweep folder); pi0-FAST decoding bundles are measured over their decode steps.

    Writes NAME.metrics.json (and NAME.grounding.csv with masks) next to each bundle NAME.npz and
    episode_metrics.json per folder of bundles (one folder = one episode). See docs/analysis.md.
    """
    from pi0viz.analysis.metrics import analyze_bundles

    # A Pi0vizError (bad file, missing masks) goes up to the pi0viz root: one line, exit 1.
    # Files and folders (bundles, episode, run, sweep) are read by pi0viz.core.runs: side files are never calls.
    written = analyze_bundles(bundles, masks_dir=masks_dir, require_masks=require_masks,
                              criterion=SinkCriterion(min_value=sink_min, row_fraction=sink_rows),
                              csv=not no_csv, log=click.echo)
    for path in written:
        click.echo(f"episode metrics: {path}")


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="The page (default RUN_DIR/report.html).")
def report_command(run_dir: str, out: str | None) -> None:
    """One offline HTML page of plots over the episode metrics under RUN_DIR."""
    from pi0viz.analysis.report import write_report

    # an unusable episode is one line on stderr (a warning, not an error: the rest of the run is reported)
    page = write_report(run_dir, out, on_unusable=lambda line: click.echo(f"skipped: {line}", err=True))
    click.echo(f"report: {page}")
