"""`pi0viz serve`: a pi0 policy behind openpi's websocket protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command("serve")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="openpi checkpoint directory (holds params/ and assets/<asset_id>/norm_stats.json).")
@click.option("--lerobot", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="LeRobot pi0 / pi0.5 checkpoint folder (save_pretrained output; needs torch and LeRobot).")
@click.option("--device", default="cpu", show_default=True, help="torch device for --lerobot.")
@click.option("--tiny", is_flag=True, help="Serve the UNTRAINED tiny pi0 (offline; shows the plumbing only).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PaliGemma's paligemma_tokenizer.model (default: openpi's cache, else the bundled one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The server has no authentication: expose it only on trusted networks.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Compute dtype for a checkpoint (openpi serves bfloat16).")
def serve_command(checkpoint: Path | None, lerobot: Path | None, device: str, tiny: bool, tokenizer: Path | None,
                  host: str, port: int, dtype: str) -> None:
    """Serve a pi0 LIBERO policy over openpi's websocket protocol (openpi-client works unchanged).

    Requests may add "pi0viz/return_attention": true to get the call's capture bundle back as
    "attention_bundle/*" arrays (docs/libero.md). Health check: GET http://HOST:PORT/healthz.
    """
    if (checkpoint is not None) + (lerobot is not None) + tiny != 1:
        raise click.UsageError("give exactly one of --checkpoint DIR, --lerobot DIR or --tiny")
    if lerobot is not None and tokenizer is not None:
        raise click.UsageError("--tokenizer goes with --checkpoint (a LeRobot checkpoint names its own tokenizer)")
    if tiny and tokenizer is not None:
        raise click.UsageError("--tokenizer goes with --checkpoint (the tiny pi0 uses its bundled tokenizer)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo("loading the policy ...", err=True)
    from pi0viz.serving.server import PolicyServer

    if lerobot is not None:  # PyTorch: never imports JAX
        from pi0viz.policy.lerobot_policy import LeRobotPolicy

        policy = LeRobotPolicy.from_pretrained(lerobot, device=device)
    else:
        from pi0viz.policy.jax_policy import Policy

        policy = Policy.tiny() if tiny else Policy.from_checkpoint(checkpoint, tokenizer_path=tokenizer, dtype=dtype)
    server = PolicyServer(policy, host=host, port=port)
    click.echo(f"serving {policy.description} on ws://{host}:{port} (health: http://{host}:{port}/healthz); "
               "Ctrl-C stops", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except OSError as err:  # typically: the port is taken
        raise click.ClickException(f"cannot serve on {host}:{port}: {err}") from None
