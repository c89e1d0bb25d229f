"""`pi0viz view`: parse, call pi0viz.viewer, map errors to exit 1 (no traceback for user mistakes)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from pi0viz.core.colormap import DEFAULT_COLORMAP


def _read_inputs(inputs: tuple[Path, ...], tree: Path | None) -> tuple[list[Path], Path | None, Any]:
    """(bundle files of one episode in call order, attention_viz tree or None, the episode or None), read by
    pi0viz.core.runs: bundle files, a bundles folder, an episode, demo or sweep folder of one episode. A folder of
    inference_timestep_N folders without bundles is a tree; an episode folder brings its own tree (attention_viz/
    or itself). The episode (core.runs.EpisodeFiles) names each call's prefix side file and its knockout results."""
    from pi0viz.core.runs import is_tree, read_run

    trees = [p for p in inputs if p.is_dir() and is_tree(p)]
    for path in trees:
        if tree is not None and tree.resolve() != path.resolve():
            raise click.UsageError(f"two attention_viz trees given ({tree} and {path}); the page shows one")
        tree = path
    if not inputs:
        return [], tree, None
    run = read_run(inputs, allow_empty=bool(trees))  # bad files and ambiguous folders: one line (RunError)
    if not run.calls:
        return [], tree, None
    episode = run.single_episode("pi0viz view")
    if tree is None and episode.tree is not None and any(p.is_dir() and p.resolve() == episode.root.resolve()
                                                         for p in inputs):
        tree = episode.tree  # the user pointed at the episode itself: show its JPEG tree too
    return episode.bundle_paths, tree, episode


@click.command("view")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("pi0viz_view.html"),
              show_default=True, help="The HTML page to write (side data goes to <stem>_data/ next to it).")
@click.option("--tree", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="An attention_viz tree of JPEGs to show next to (or instead of) the bundles.")
@click.option("--heads", type=click.Choice(["side", "embed", "none"]), default="side", show_default=True,
              help="Per-head maps: side files loaded on demand, inside the page (single file), or none.")
@click.option("--fused", type=click.Choice(["auto", "embed", "side"]), default="auto", show_default=True,
              help="Fused maps inside the page, in side files, or auto (inside for up to 4 calls).")
@click.option("--batch", "--batch-index", "batch", type=click.IntRange(0), default=0, show_default=True,
              help="Batch element drawn when a capture holds several (B > 1).")
@click.option("--zoom", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Integer pixels per model-input pixel (patches stay exact pixel blocks); here: screen pixels.")
@click.option("--colormap", default=DEFAULT_COLORMAP, show_default=True,
              help="A matplotlib colormap name (the page also offers inferno, magma, viridis, turbo).")
@click.option("--title", default=None, help="Page title (default: the prompt).")
@click.option("--serve", is_flag=True, help="Serve the page over HTTP after writing it (Ctrl-C to stop).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --serve.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port for --serve (0: any free port).")
def view_command(inputs: tuple[Path, ...], out: Path, tree: Path | None, heads: str, fused: str, batch: int,
                 zoom: int, colormap: str, title: str | None, serve: bool, host: str, port: int) -> None:
    """Write an interactive, offline HTML viewer for capture bundles (.npz, several = one episode) and/or an
    attention_viz tree. Open the page in a browser; keyboard: arrows = action token / layer, [ ] = diffusion
    step, , . = inference step, h = next head, s = color scale. A pi0-FAST decoding bundle (pi0viz.capture/2)
    gets a decode-step slider ([ ]) and a map over the tokens generated so far."""
    from pi0viz.viewer import serve_viewer, write_viewer

    bundles, tree, episode = _read_inputs(inputs, tree)
    if not bundles and tree is None:
        raise click.UsageError("give at least one capture bundle (.npz) or an attention_viz tree")
    start = time.perf_counter()
    # the episode's side files (core.runs): each call's prefix attention, the knockout results in its folder
    prefixes = [c.prefix for c in episode.calls] if episode is not None else None
    knockouts = episode.knockouts if episode is not None else []
    # bundle, fusion, viewer and output faults are Pi0vizErrors: the `pi0viz` command prints them as one line
    page = write_viewer(bundles, out, tree=tree, heads=heads, fused=fused, batch=batch, zoom=zoom,
                        colormap=colormap, title=title, prefixes=prefixes, knockouts=knockouts,
                        knockouts_root=episode.root if episode is not None else None)
    size = page.stat().st_size
    data_dir = page.parent / (page.stem + "_data")
    side = sum(f.stat().st_size for f in data_dir.iterdir()) if data_dir.is_dir() else 0
    extra = f"; side data {side / 2**20:.1f} MiB in {data_dir}" if side else ""
    what = f"{len(bundles)} call(s)" + (f" + tree {tree}" if tree else "")
    n_prefix = sum(p is not None for p in prefixes or [])
    what += (f", prefix attention of {n_prefix} call(s)" if n_prefix else "") + \
        (f", {len(knockouts)} knockout result(s)" if knockouts else "")
    click.echo(f"wrote {page} ({size / 2**20:.1f} MiB{extra}) for {what} in {time.perf_counter() - start:.1f} s")
    if not serve:
        click.echo(f"open file://{page.resolve()}")
        return
    root = Path(os.path.commonpath([page.resolve().parent, tree.resolve()])) if tree else None
    try:
        server, url = serve_viewer(page, host=host, port=port, root=root, background=True)
    except (OSError, OverflowError) as err:
        raise click.ClickException(f"cannot serve on {host}:{port} ({err}); try --port 0") from None
    click.echo(f"serving {url}  (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
        server.server_close()
