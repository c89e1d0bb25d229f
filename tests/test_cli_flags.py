"""One flag vocabulary: a flag name means the same thing and takes the same values in every `pi0viz` command and in
examples/libero/main.py, and docs/cli.md lists every flag of every command (so the page cannot drift)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
EXAMPLE = ROOT / "examples" / "libero" / "main.py"
SELECTIONS = {"--steps", "--layers", "--action-tokens", "--tasks"}  # read by pi0viz.core.selection
PER_COMMAND_TYPE = {"--out": "a folder for some commands, a file for others"}  # the only flag whose kind varies


def commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}  # imports every lazy command


def options(*, aliases: bool = True) -> dict[str, dict[str, click.Option]]:
    """flag name -> {command: option} over every visible option (hidden ones only carry hints); with
    aliases=False only each option's first name (`--batch` of `--batch, --batch-index`)."""
    found: dict[str, dict[str, click.Option]] = defaultdict(dict)
    for name, cmd in commands().items():
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                for flag in (*param.opts, *param.secondary_opts) if aliases else param.opts[:1]:
                    found[flag][name] = param
    return found


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def takes(param: click.Option, flag: str) -> str:
    """What a flag takes, as docs/cli.md writes it in its *takes* column."""
    t = param.type
    if param.is_flag:
        return "flag"
    if flag in SELECTIONS:
        return "selection"
    if isinstance(t, click.Choice):
        return "one of " + "|".join(map(str, t.choices))
    if isinstance(t, (click.IntRange, click.FloatRange)):
        kind = "integer" if isinstance(t, click.IntRange) else "number"
        lo = None if t.min is None else (">" if t.min_open else ">=", _num(t.min))
        hi = None if t.max is None else ("<" if t.max_open else "<=", _num(t.max))
        if lo and hi and lo[0] == ">=" and hi[0] == "<=":
            return f"{kind} {lo[1]}..{hi[1]}"
        return f"{kind} " + " and ".join(f"{bound[0]} {bound[1]}" for bound in (lo, hi) if bound)
    if isinstance(t, click.Path):
        return "file" if not t.dir_okay else "folder" if not t.file_okay else "path"
    return {"integer": "integer", "float": "number", "text": "text"}[t.name]


def signature(param: click.Option) -> tuple:
    """Everything that decides which values a flag accepts (not its default, not its help)."""
    t = param.type
    sig: tuple = (param.is_flag, param.multiple, param.nargs, type(t).__name__)
    if isinstance(t, click.Choice):
        sig += (tuple(t.choices),)
    if isinstance(t, (click.IntRange, click.FloatRange)):
        sig += (t.min, t.max, t.min_open, t.max_open, t.clamp)
    if isinstance(t, click.Path):
        sig += (t.file_okay, t.dir_okay)
    return sig


def doc_rows() -> dict[str, dict[str, object]]:
    """docs/cli.md's table: flag name -> {names, takes, commands} (a row may name a flag and its old spelling)."""
    rows: dict[str, dict[str, object]] = {}
    text = DOC.read_text().split("## Every flag", 1)[1]
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        names = tuple(re.findall(r"`(-[-\w]+)`", cells[0]))
        row = {"names": names, "takes": cells[2], "commands": {c.strip() for c in cells[-1].split(",")}}
        assert names and names[0] not in rows, f"docs/cli.md lists {names[0]} twice"
        rows[names[0]] = row  # a row is keyed by its flag's name; the others in its first cell are its aliases
    return rows


def load_example():
    spec = importlib.util.spec_from_file_location("libero_example_main", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def example_actions() -> dict[str, argparse.Action]:
    parser = load_example().build_parser()
    return {flag: action for action in parser._actions for flag in action.option_strings
            if flag not in ("-h", "--help")}


def test_a_flag_takes_the_same_values_in_every_command() -> None:
    clashes = []
    for flag, where in sorted(options().items()):
        if flag in PER_COMMAND_TYPE:
            continue
        sigs = {cmd: signature(param) for cmd, param in where.items()}
        if len(set(sigs.values())) > 1:
            clashes.append(f"{flag}: " + "; ".join(f"{cmd} {takes(where[cmd], flag)}" for cmd in sorted(sigs)))
    assert not clashes, "one flag, one meaning:\n" + "\n".join(clashes)


def test_selections_are_text_read_by_the_one_grammar() -> None:
    for flag in SELECTIONS:
        for cmd, param in options()[flag].items():
            assert param.type is click.STRING and not param.is_flag, (flag, cmd)


def test_the_known_conflicts_are_gone() -> None:
    found = options()
    assert set(found["--scale"]) == {"render"} and set(found["--scale-over"]) == {"video"}
    assert {cmd for cmd in found["--quality"]} == {"render", "video", "rerun"}
    assert {cmd for cmd in found["--batch"]} == {"render", "video", "rerun", "view"}
    assert "--batch-index" in found and set(found["--batch-index"]) == set(found["--batch"])  # the old spelling
    assert {takes(p, "--zoom") for p in found["--zoom"].values()} == {"integer 1..16"}
    assert {takes(p, "--quality") for p in found["--quality"].values()} == {"integer 1..100"}


def test_every_flag_is_in_docs_cli_md_with_what_it_takes_and_where() -> None:
    rows = doc_rows()
    problems = []
    for flag, where in sorted(options(aliases=False).items()):
        row = rows.get(flag)
        if row is None:
            problems.append(f"{flag} ({', '.join(sorted(where))}) is not in docs/cli.md")
            continue
        for cmd, param in where.items():
            missing = [a for a in (*param.opts, *param.secondary_opts) if a not in row["names"]]
            if missing:
                problems.append(f"{flag}: docs/cli.md does not name its other spelling {missing} ({cmd})")
        listed = {c for c in row["commands"] if c != "example"}
        if listed != set(where):
            problems.append(f"{flag}: docs/cli.md says {sorted(listed)}, the commands are {sorted(where)}")
        if flag not in PER_COMMAND_TYPE:
            want = {takes(p, flag) for p in where.values()}
            if want != {row["takes"]}:
                problems.append(f"{flag}: docs/cli.md says it takes {row['takes']!r}, the commands take {sorted(want)}")
    code = set(options(aliases=False))
    for flag, row in rows.items():
        if flag not in code and row["commands"] != {"example"}:
            problems.append(f"docs/cli.md lists {flag}, which no pi0viz command has")
    assert not problems, "\n".join(problems)


def test_the_libero_example_agrees_with_the_commands() -> None:
    actions, found, rows = example_actions(), options(), doc_rows()
    problems = []
    for flag, action in sorted(actions.items()):
        if flag != action.option_strings[0]:
            continue  # the example's old spelling (--task-ids): checked as its first name
        doc_says_example = flag in rows and "example" in rows[flag]["commands"]
        if flag not in found:  # the example's own flags (--render-steps, ...) are described in docs/libero.md
            continue
        if not doc_says_example:
            problems.append(f"{flag}: the example has it, docs/cli.md does not list 'example' for it")
        for cmd, param in found[flag].items():
            if param.is_flag != (action.nargs == 0):
                problems.append(f"{flag}: a flag in {cmd}, not in the example (or the reverse)")
            if action.choices is not None and isinstance(param.type, click.Choice):
                if list(action.choices) != list(param.type.choices):
                    problems.append(f"{flag}: choices differ between {cmd} and the example")
            if isinstance(param.type, click.IntRange):
                convert = action.type
                for value, ok in ((param.type.min, True), (param.type.max, True),
                                  (None if param.type.min is None else param.type.min - 1, False),
                                  (None if param.type.max is None else param.type.max + 1, False)):
                    if value is None:
                        continue
                    try:
                        convert(str(value))
                        accepted = True
                    except (argparse.ArgumentTypeError, ValueError, TypeError):
                        accepted = False
                    if accepted != ok:
                        problems.append(f"{flag}={value}: {cmd} {'accepts' if ok else 'refuses'} it, the example "
                                        f"does not")
            if flag in SELECTIONS:
                with pytest.raises(argparse.ArgumentTypeError, match="runs backwards"):
                    action.type("5-3")
    for flag, row in rows.items():
        if "example" in row["commands"] and flag not in actions:
            problems.append(f"docs/cli.md lists {flag} for the example, which has no such flag")
    assert not problems, "\n".join(problems)


# -- the grammar reaches every command that takes a selection ---------------------------------------------------


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory) -> Path:
    from pi0viz.core.bundle import save_bundle
    from pi0viz.core.synthetic import synthetic_bundle

    b = synthetic_bundle(num_steps=3, num_layers=4, num_action_tokens=5)
    b.inference_step = 0
    return save_bundle(b, tmp_path_factory.mktemp("flags") / "inference_000.npz")


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["render", "video", "rerun"])
def test_a_backwards_range_is_one_line_in_every_command(bundle_file, tmp_path, command) -> None:
    out = tmp_path / {"render": "tree", "video": "e.mp4", "rerun": "e.rrd"}[command]
    code, output = _run([command, str(bundle_file), "--out", str(out), "--no-progress", "--layers", "3-1"])
    assert code == 1 and "layers: range '3-1' runs backwards" in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_rerun_steps_takes_ranges_like_render(bundle_file, tmp_path) -> None:
    pytest.importorskip("rerun", reason="the [rerun] extra")
    code, output = _run(["rerun", str(bundle_file), "--out", str(tmp_path / "e.rrd"), "--no-progress",
                         "--steps", "1-100000000000", "--quality", "50"])
    assert code == 0, output
    code, output = _run(["rerun", str(bundle_file), "--out", str(tmp_path / "f.rrd"), "--no-progress",
                         "--steps", "7"])
    assert code == 1 and "[7] not in this capture, which has 0-2" in output, output


def test_video_old_scale_spelling_gets_a_one_line_hint(bundle_file, tmp_path) -> None:
    code, output = _run(["video", str(bundle_file), "--out", str(tmp_path / "e.mp4"), "--scale", "episode"])
    assert code == 1 and "--scale-over call|episode" in output and len(output.strip().splitlines()) == 1, output


def test_video_quality_is_one_to_hundred(bundle_file, tmp_path) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="the [video] extra")
    code, output = _run(["video", str(bundle_file), "--out", str(tmp_path / "e.mp4"), "--no-progress",
                         "--quality", "100", "--batch", "0", "--scale-over", "episode"])
    assert code == 0, output
    data = (tmp_path / "e.mp4").read_bytes()
    assert data[4:8] == b"ftyp" and len(np.frombuffer(data, np.uint8)) > 100
    code, output = _run(["video", str(bundle_file), "--out", str(tmp_path / "f.mp4"), "--quality", "0"])
    assert code == 1 and "--quality" in output and "0 is not in 1..100" in output, output


def test_view_takes_render_zoom_and_colormap_values(bundle_file, tmp_path) -> None:
    page = tmp_path / "v.html"
    code, output = _run(["view", str(bundle_file), "--out", str(page), "--zoom", "16", "--colormap", "plasma",
                         "--batch-index", "0"])
    assert code == 0, output
    text = page.read_text()
    assert re.search(r'"zoom": ?16[,}]', text) and re.search(r'"colormap": ?"plasma"', text)  # the page's meta
    code, output = _run(["view", str(bundle_file), "--out", str(page), "--colormap", "no-such-map"])
    assert code == 1 and "unknown colormap 'no-such-map'" in output and len(output.strip().splitlines()) == 1, output


def test_range_errors_are_written_as_docs_cli_md_writes_ranges(bundle_file) -> None:
    for args, expect in ((["render", str(bundle_file), "--batch", "-1"], "-1 is not >= 0"),
                         (["render", str(bundle_file), "--zoom", "17"], "17 is not in 1..16"),
                         (["metrics", str(bundle_file), "--sink-min", "0"], "0.0 is not > 0 and <= 1")):
        code, output = _run(args)
        assert code == 1 and expect in output and len(output.strip().splitlines()) == 1, output
