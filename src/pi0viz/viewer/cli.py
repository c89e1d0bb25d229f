"""`pi0viz view`: parse, call pi0viz.viewer, map errors to exit 1 (no traceback for user mistakes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from pi0viz.core.colormap import COLORMAPS


def _split_inputs(inputs: tuple[Path, ...], tree: Path | None) -> tuple[list[Path], Path | None]:
    """.npz files are bundles; a directory is an attention_viz tree if it holds inference_timestep_N
    folders, otherwise a folder of bundles (all its *.npz)."""
    bundles: list[Path] = []
    for path in inputs:
        if path.is_dir():
            if any(p.name.startswith("inference_timestep_") and p.is_dir() for p in path.iterdir()):
                if tree is not None and tree.resolve() != path.resolve():
                    raise click.UsageError(f"two attention_viz trees given ({tree} and {path}); the page shows one")
                tree = path
            else:
                found = sorted(path.glob("*.npz"))
                if not found:
                    raise click.UsageError(f"{path}: neither an attention_viz tree nor a folder of .npz bundles")
                bundles += found
        else:
            bundles.append(path)
    return bundles, tree


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
@click.option("--batch", type=int, default=0, show_default=True, help="Batch element of each bundle.")
@click.option("--zoom", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Screen pixels per image pixel (integer: patches stay exact pixel blocks).")
@click.option("--colormap", type=click.Choice(list(COLORMAPS)), default="inferno",
              show_default=True)
@click.option("--title", default=None, help="Page title (default: the prompt).")
@click.option("--serve", is_flag=True, help="Serve the page over HTTP after writing it (Ctrl-C to stop).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --serve.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve (0: any free port).")
def view_command(inputs: tuple[Path, ...], out: Path, tree: Path | None, heads: str, fused: str, batch: int,
                 zoom: int, colormap: str, title: str | None, serve: bool, host: str, port: int) -> None:
    """Write an interactive, offline HTML viewer for capture bundles (.npz, several = one episode) and/or an
    attention_viz tree. Open the page in a browser; keyboard: arrows = action token / layer, [ ] = diffusion
    step, , . = inference step, h = next head, s = color scale."""
    from pi0viz.viewer import serve_viewer, write_viewer

    if serve and not 0 <= port <= 65535:  # checked before anything is written
        raise click.UsageError(f"--port must be in 0..65535 (0: any free port), got {port}")
    bundles, tree = _split_inputs(inputs, tree)
    if not bundles and tree is None:
        raise click.UsageError("give at least one capture bundle (.npz) or an attention_viz tree")
    start = time.perf_counter()
    # bundle, fusion, viewer and output faults are Pi0vizErrors: the `pi0viz` command prints them as one line
    page = write_viewer(bundles, out, tree=tree, heads=heads, fused=fused, batch=batch, zoom=zoom,
                        colormap=colormap, title=title)
    size = page.stat().st_size
    data_dir = page.parent / (page.stem + "_data")
    side = sum(f.stat().st_size for f in data_dir.iterdir()) if data_dir.is_dir() else 0
    extra = f"; side data {side / 2**20:.1f} MiB in {data_dir}" if side else ""
    what = f"{len(bundles)} call(s)" + (f" + tree {tree}" if tree else "")
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
