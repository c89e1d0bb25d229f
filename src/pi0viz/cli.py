"""`pi0viz` command line. Each subcommand lives in the module that owns the job and is imported only
when used, so `pi0viz render` never pays for JAX and `pi0viz --help` is instant."""

from __future__ import annotations

import importlib

import click

from pi0viz.errors import Pi0vizError

# name -> (module, attribute, one-line help)
_COMMANDS = {
    "demo": ("pi0viz.demo", "demo_command", "Run the tiny pi0 on shipped LIBERO frames and render its attention."),
    "render": ("pi0viz.render.cli", "render_command", "Render a capture bundle as the attention_viz tree of JPEGs."),
    "view": ("pi0viz.viewer.cli", "view_command", "Write (and optionally serve) the interactive attention viewer."),
    "serve": ("pi0viz.serving.cli", "serve_command", "Serve a pi0 policy over openpi's websocket protocol."),
}


class _LazyGroup(click.Group):
    """Subcommands imported on first use; any Pi0vizError a command lets through becomes one line, exit 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Pi0vizError as err:
            name = ctx.invoked_subcommand or ""
            click.echo(f"pi0viz {name}: error: {err}".replace("  ", " "), err=True)
            ctx.exit(1)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, _COMMANDS[name][2]) for name in sorted(_COMMANDS)])


@click.group(cls=_LazyGroup)
@click.version_option(package_name="pi0viz")
def main() -> None:
    """See where a pi0 vision-language-action policy looks."""


if __name__ == "__main__":
    main()
