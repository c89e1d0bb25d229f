"""`pi0viz serve`: a pi0 / pi0.5 / pi0-FAST policy behind openpi's websocket protocol.

The policy is a policy spec (pi0viz.policy.spec), `--policy tiny | reach-tiny | checkpoint:DIR | lerobot:DIR`;
`--tiny`, `--checkpoint DIR` and `--lerobot DIR` are older spellings of the same specs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

# The named configs of pi0viz.policy.configs, spelled out so that `serve --lerobot` never imports JAX.
CONFIG_NAMES = ("pi0_libero", "pi05_libero", "pi0_base", "pi05_base", "pi0_fast_libero")
SERVE_KINDS = ("tiny", "reach-tiny", "checkpoint", "lerobot", "hf-pi0")  # a server spec (ws://) would be a proxy


@click.command("serve")
@click.option("--policy", "policy_spec", default=None, metavar="SPEC",
              help="tiny, reach-tiny, checkpoint:DIR, lerobot:DIR or hf-pi0:DIR (the spec every pi0viz command takes).")
@click.option("--config", "config_name", type=click.Choice(CONFIG_NAMES), default="pi0_libero", show_default=True,
              help="Named policy config for --checkpoint / --tiny: model shape + openpi's transforms "
                   "(pi05_libero: pi0.5; pi0_fast_libero: pi0-FAST).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="openpi checkpoint directory (holds params/ and assets/<asset_id>/norm_stats.json).")
@click.option("--lerobot", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="LeRobot pi0 / pi0.5 checkpoint folder (save_pretrained output; needs torch and LeRobot).")
@click.option("--device", default="cpu", show_default=True, help="torch device for --lerobot.")
@click.option("--tiny", is_flag=True, help="Serve the UNTRAINED tiny model of --config (offline; plumbing only).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PaliGemma's paligemma_tokenizer.model (default: openpi's cache, else the bundled one).")
@click.option("--fast-tokenizer", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="pi0-FAST (--config pi0_fast_libero) with --checkpoint: the physical-intelligence/fast folder "
                   "(tokenizer.json + processor_config.json; default: the Hugging Face cache's copy).")
@click.option("--asset-id", default=None,
              help="Norm stats under <checkpoint>/assets/<asset-id>/ (default: the config's; base configs need it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The server has no authentication: expose it only on trusted networks.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Compute dtype for a checkpoint (openpi serves bfloat16).")
@click.option("--record", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write every call's capture bundle to DIR/bundles/call_NNNNN.npz on the server (clients unchanged).")
@click.option("--record-tree", is_flag=True, help="With --record: also render each call's attention_viz tree in DIR.")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="Let browser pages from ORIGIN (scheme://host[:port], or null) connect; repeatable. Default: "
                   "loopback pages and non-browser clients only.")
def serve_command(policy_spec: str | None, config_name: str, checkpoint: Path | None, lerobot: Path | None,
                  device: str, tiny: bool, tokenizer: Path | None, fast_tokenizer: Path | None,
                  asset_id: str | None, host: str, port: int,
                  dtype: str, record: Path | None, record_tree: bool, allow_origins: tuple[str, ...]) -> None:
    """Serve a LIBERO policy (pi0, pi0.5 or pi0-FAST) over openpi's websocket protocol (openpi-client works
    unchanged).

    Requests may add "pi0viz/return_attention": true to get the call's capture bundle back as
    "attention_bundle/*" arrays (docs/libero.md); --record DIR keeps every call's bundle on the server instead,
    for clients that cannot change. Health check: GET http://HOST:PORT/healthz.
    """
    from pi0viz.policy.spec import check_options, parse_policy_spec, require_kinds

    if (policy_spec is not None) + (checkpoint is not None) + (lerobot is not None) + tiny != 1:
        raise click.UsageError("give exactly one of --checkpoint DIR, --lerobot DIR or --tiny (or --policy SPEC)")
    # The older spellings are specs too, so every combination is checked in one place.
    text = policy_spec or ("tiny" if tiny else f"checkpoint:{checkpoint}" if checkpoint else f"lerobot:{lerobot}")
    spec = require_kinds(parse_policy_spec(text), SERVE_KINDS, "pi0viz serve")
    check_options(spec, config=config_name, tokenizer=tokenizer, asset_id=asset_id, fast_tokenizer=fast_tokenizer)
    if record_tree and record is None:
        raise click.UsageError("--record-tree needs --record DIR")
    from pi0viz.serving.recorder import CallRecorder, call_bytes_estimate
    from pi0viz.serving.server import PolicyServer, normalize_origin

    bad = [o for o in allow_origins if normalize_origin(o) is None]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not an origin; expected scheme://host[:port] (http or https, no "
                                 "path) or null", param_hint="--allow-origin")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo("loading the policy ...", err=True)
    from pi0viz.policy.spec import load_policy

    policy = load_policy(spec, config=config_name, tokenizer=tokenizer, asset_id=asset_id, dtype=dtype,
                         device=device, fast_tokenizer=fast_tokenizer)  # lerobot:DIR is PyTorch: never imports JAX
    # Refused (one line, nothing created) unless one call of this policy fits on the record folder's disk.
    recorder = (CallRecorder(record, tree=record_tree, call_bytes=call_bytes_estimate(policy, tree=record_tree))
                if record is not None else None)
    server = PolicyServer(policy, host=host, port=port, recorder=recorder, allowed_origins=allow_origins)

    def announce(bound: PolicyServer) -> None:  # after binding: with --port 0 this is the port the OS chose
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"serving {policy.description} on ws://{shown}:{bound.port} (health: "
                   f"http://{shown}:{bound.port}/healthz); Ctrl-C stops", err=True)
        if recorder is not None:
            click.echo(f"recording every call's attention bundle under {recorder.folder}/bundles/", err=True)

    try:
        server.serve_forever(on_ready=announce)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except OSError as err:  # typically: the port is taken
        raise click.ClickException(f"cannot serve on {host}:{port}: {err}") from None
