"""`pi0viz` command line. Each subcommand lives in the module that owns the job and is imported only
when used, so `pi0viz render` never pays for JAX and `pi0viz --help` is instant."""

from __future__ import annotations

import importlib
import re
import sys

import click

from pi0viz.errors import Pi0vizError

# name -> (module, attribute, one-line help)
_COMMANDS = {
    "demo": ("pi0viz.demo", "demo_command", "Run the tiny pi0 on shipped LIBERO frames and render its attention."),
    "render": ("pi0viz.render.cli", "render_command", "Render a capture bundle as the attention_viz tree of JPEGs."),
    "view": ("pi0viz.viewer.cli", "view_command", "Write (and optionally serve) the interactive attention viewer."),
    "sweep": ("pi0viz.sweep.cli", "sweep_command", "Run a whole LIBERO evaluation with attention on Ray."),
    "serve": ("pi0viz.serving.cli", "serve_command", "Serve a pi0 policy over openpi's websocket protocol."),
    "video": ("pi0viz.episode.cli", "video_command", "Write an episode's attention video (MP4) synced to the rollout."),
    "rerun": ("pi0viz.episode.cli", "rerun_command", "Write an episode's attention as a Rerun recording (.rrd)."),
    "metrics": ("pi0viz.analysis.cli", "metrics_command", "Sinks, region masses and grounding metrics of bundles."),
    "report": ("pi0viz.analysis.cli", "report_command", "One offline HTML report of plots over a run's metrics."),
    "knockout": ("pi0viz.causal.cli", "knockout_command",
                 "Deletion and insertion curves: rank attention maps by how much the actions depend on them."),
}


class _LazyGroup(click.Group):
    """Subcommands imported on first use. Every user fault a command lets through (a Pi0vizError, or a usage error
    that click raises) becomes one line on stderr, `pi0viz CMD: error: ...`, and exit status 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        name = next((a for a in argv if a in _COMMANDS), "")
        try:
            rv = super().main(argv, prog_name or "pi0viz", complete_var, standalone_mode=False, **extra)
        except Pi0vizError as err:
            _fail(name, str(err))
        except click.UsageError as err:  # bad option values, missing arguments: one line plus where to look
            _fail(name, f"{_ranges_as_in_docs(err.format_message())} (see: pi0viz {name} --help)".replace("  ", " "))
        except click.ClickException as err:
            _fail(name, err.format_message())
        except click.Abort:
            _fail(name, "interrupted")
        sys.exit(rv if isinstance(rv, int) else 0)

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


_NUM = r"-?[\d.]+(?:e[+-]?\d+)?"
_CLICK_RANGE = re.compile(rf"is not in the range (?:({_NUM})(<=?))?x(?:(<=?)({_NUM}))?(?:(>=?)({_NUM}))?")


def _ranges_as_in_docs(message: str) -> str:
    """click's "is not in the range 1<=x<=100" / "x>=0" / "0<x<=1" as docs/cli.md writes ranges: "is not in
    1..100" / "is not >= 0" / "is not > 0 and <= 1"."""
    def words(m: re.Match) -> str:
        lo, lo_op, hi_op, hi, one_op, one = m.groups()
        if one_op:
            return f"is not {one_op} {one}"
        if lo_op == "<=" and hi_op == "<=":
            return f"is not in {lo}..{hi}"
        bounds = [f"{'>' if lo_op == '<' else '>='} {lo}"] if lo else []
        bounds += [f"{hi_op} {hi}"] if hi else []
        return "is not " + " and ".join(bounds)
    return _CLICK_RANGE.sub(words, message)


def _fail(command: str, message: str) -> None:
    prefix = f"pi0viz {command}: error:" if command else "pi0viz: error:"
    click.echo(f"{prefix} {' '.join(message.split())}", err=True)  # one line, whatever the message held
    sys.exit(1)


if __name__ == "__main__":
    main()
