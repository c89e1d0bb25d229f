"""The one policy spec: every form, the one line a bad spec gives, and the four entry points (demo, serve, sweep,
the LIBERO example) reading --policy with the same parser, so the same bad spec gives the same line everywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.errors import ConfigError, Pi0vizError
from pi0viz.policy.spec import FORMS, PolicySpec, PolicySpecError, check_options, load_policy, parse_policy_spec

from libero_support import load_libero_example  # noqa: E402


@pytest.mark.parametrize("text, kind, path, uri", [
    ("tiny", "tiny", None, None),
    ("reach-tiny", "reach-tiny", None, None),
    ("checkpoint:/data/pi0_libero", "checkpoint", Path("/data/pi0_libero"), None),
    ("checkpoint:relative/dir", "checkpoint", Path("relative/dir"), None),
    ("lerobot:/models/pi05_libero", "lerobot", Path("/models/pi05_libero"), None),
    ("hf-pi0:/models/pi0_native", "hf-pi0", Path("/models/pi0_native"), None),
    ("ws://127.0.0.1:8000", "server", None, "ws://127.0.0.1:8000"),
    ("wss://gpu-box.example:443", "server", None, "wss://gpu-box.example:443"),
])
def test_every_form_parses(text, kind, path, uri):
    spec = parse_policy_spec(text)
    assert (spec.kind, spec.path, spec.uri) == (kind, path, uri)
    assert str(spec) == text and parse_policy_spec(str(spec)) == spec
    assert spec.in_process == (kind != "server")
    assert parse_policy_spec(spec) is spec


@pytest.mark.parametrize("text", ["", "Tiny", "untrained", "server", "checkpoint:", "lerobot:", "checkpoint",
                                  "/data/pi0_libero", "http://127.0.0.1:8000", "ws://", "ws://:8000",
                                  "ws://host:99999", "ws://host:port", "ws://host:8000/path", "tiny:pi05_libero"])
def test_bad_forms_are_one_line_listing_the_forms(text):
    with pytest.raises(PolicySpecError) as err:
        parse_policy_spec(text)
    message = str(err.value)
    assert "\n" not in message and repr(text) in message and message.endswith(FORMS)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, Pi0vizError)


def test_options_that_do_not_go_with_the_spec_are_refused():
    check_options(parse_policy_spec("checkpoint:x"), config="pi05_libero", tokenizer="t.model", asset_id="a/b")
    check_options(parse_policy_spec("tiny"), config="pi05_libero")
    check_options(parse_policy_spec("lerobot:x"), config="pi0_libero")  # the default config is no choice
    for text, options, match in [
        ("reach-tiny", {"config": "pi05_libero"}, "config 'pi05_libero' goes with policy tiny or checkpoint:DIR"),
        ("lerobot:x", {"config": "pi05_libero"}, "has its own"),
        ("tiny", {"tokenizer": "t.model"}, "a tokenizer goes with policy checkpoint:DIR"),
        ("tiny", {"asset_id": "a/b"}, "an asset id goes with policy checkpoint:DIR"),
    ]:
        with pytest.raises(PolicySpecError, match=match):
            check_options(parse_policy_spec(text), **options)


def test_load_policy_builds_what_the_spec_names():
    tiny = load_policy("tiny", config="pi05_libero")
    assert "UNTRAINED tiny pi0.5" in tiny.description and tiny.config.action_horizon == 10
    reach = load_policy(PolicySpec("reach-tiny"))
    assert reach.description.startswith("reach-tiny") and reach.config.image_keys == ("base_0_rgb",)
    with pytest.raises(PolicySpecError, match="loading a policy in process cannot run policy 'ws://h:1'"):
        load_policy("ws://h:1")
    with pytest.raises(Pi0vizError, match="nowhere"):  # a folder without the checkpoint: one line naming it
        load_policy("checkpoint:/nowhere/at/all")


def test_demo_spellings_map_to_specs():
    from pi0viz.demo import demo_policy_spec

    assert demo_policy_spec() == PolicySpec("reach-tiny")
    assert demo_policy_spec(untrained=True) == PolicySpec("tiny")
    assert demo_policy_spec(model="pi05") == PolicySpec("tiny")  # reach-tiny is a pi0
    assert demo_policy_spec(checkpoint=Path("ck")) == PolicySpec("checkpoint", path=Path("ck"))
    assert demo_policy_spec("lerobot:lr") == PolicySpec("lerobot", path=Path("lr"))
    with pytest.raises(PolicySpecError, match="replaces --checkpoint"):
        demo_policy_spec("tiny", checkpoint=Path("ck"))
    with pytest.raises(PolicySpecError, match="pi0viz demo cannot run policy 'ws://h:1'"):
        demo_policy_spec("ws://h:1")


# -- the four entry points ----------------------------------------------------------------------------------------


def _cli_error(*args: str) -> str:
    """`pi0viz ARGS` in-process: exit 1, no traceback, one error line on stderr; returns that line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _example_error(capsys, *args: str) -> str:
    """examples/libero/main.py's argument parser on ARGS: exit 2 (argparse), the error as its last line."""
    example = load_libero_example("libero_example_main_spec")
    with pytest.raises(SystemExit) as exit_:
        example.parse_args(list(args))
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("bad", ["nonsense", "checkpoint:", "ws://host:port"])
def test_the_same_bad_spec_gives_the_same_line_everywhere(bad, tmp_path, capsys):
    with pytest.raises(PolicySpecError) as err:
        parse_policy_spec(bad)
    line = str(err.value)
    outputs = {
        "demo": _cli_error("demo", "--policy", bad, "--out", str(tmp_path / "demo")),
        "serve": _cli_error("serve", "--policy", bad),
        "sweep": _cli_error("sweep", "--policy", bad, "--out", str(tmp_path / "sweep")),
        "example": _example_error(capsys, "--policy", bad),
    }
    for where, output in outputs.items():
        assert output.endswith(line), (where, output)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "sweep").exists()  # refused before anything ran


def test_older_spellings_go_through_the_same_checks(tmp_path):
    assert "exactly one of --checkpoint DIR, --lerobot DIR or --tiny" in _cli_error("serve", "--tiny",
                                                                                     "--policy", "tiny")
    assert "an asset id goes with policy checkpoint:DIR" in _cli_error("serve", "--tiny", "--asset-id", "a/b")
    assert "pi0viz serve cannot run policy 'ws://h:1'" in _cli_error("serve", "--policy", "ws://h:1")
    assert "pi0viz sweep cannot run policy 'lerobot:" in _cli_error("sweep", "--policy", f"lerobot:{tmp_path}",
                                                                    "--out", str(tmp_path / "s"))
    assert "--untrained and --checkpoint exclude each other" in _cli_error("demo", "--untrained", "--checkpoint",
                                                                            str(tmp_path))
    assert "config 'pi05_libero' goes with policy tiny or checkpoint:DIR" in _cli_error(
        "demo", "--policy", "reach-tiny", "--model", "pi05", "--out", str(tmp_path / "d"))


def test_the_example_reads_server_as_its_host_and_port(capsys):
    example = load_libero_example("libero_example_main_spec")
    args = example.parse_args(["--policy", "server", "--host", "10.0.0.2", "--port", "9000"])
    assert example.policy_spec(args) == PolicySpec("server", uri="ws://10.0.0.2:9000")
    args = example.parse_args(["--policy", "checkpoint:ck", "--config", "pi05_libero", "--tokenizer", "t.model"])
    assert example.policy_spec(args) == PolicySpec("checkpoint", path=Path("ck"))
    assert "a tokenizer goes with policy checkpoint:DIR" in _example_error(capsys, "--policy", "tiny",
                                                                           "--tokenizer", "t.model")


def test_server_metadata_names_the_robot_width_action_dims_and_the_padded_width_action_dim():
    from pi0viz.serving.server import server_metadata

    meta = server_metadata(load_policy("tiny"))
    assert (meta["action_dims"], meta["action_dim"], meta["action_horizon"]) == (7, 32, 50)


def test_policy_refuses_chains_built_for_another_model_shape():
    from pi0viz.policy.configs import make_transforms
    from pi0viz.policy.jax_policy import Policy

    tiny, tiny05 = load_policy("tiny"), load_policy("tiny", config="pi05_libero")
    with pytest.raises(ConfigError, match="48 prompt slots, the model has 200"):
        Policy(tiny05.params, tiny05.config, tiny.transforms)
    one_camera = make_transforms(dataclasses.replace(tiny.config, image_keys=("base_0_rgb",)), tiny.tokenizer,
                                 tiny.norm_stats)
    with pytest.raises(ConfigError, match="cameras"):
        Policy(tiny.params, tiny.config, one_camera)
    with pytest.raises(ConfigError, match="make_transforms"):
        Policy(tiny.params, tiny.config, tiny.tokenizer)  # the old (tokenizer, norm_stats, ...) form
