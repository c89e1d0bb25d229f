"""The sweep's reach suite in the real LIBERO simulator on a real local Ray: the closed-loop reach-tiny on random
settled layouts, a per-object success table, grounding on the named object vs the others by outcome, the
prompt-blind baseline on the same episodes, and `pi0viz report` over the run. Small on purpose: one task, two
episodes of 10 control steps (2 calls), 64 px cameras."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from extras import require, require_libero

pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()
ray = require("ray", "sweep")

from pi0viz.sweep.engine import RunOptions, run_sweep  # noqa: E402
from pi0viz.sweep.plan import SweepSettings, plan_episodes  # noqa: E402
from pi0viz.sweep.rollout import WorkerOptions  # noqa: E402
from pi0viz.sweep.store import RunStore  # noqa: E402

# the closed-loop reach-tiny (training_runs/reach_tiny_loop, docs/reach_tiny.md), as the README runs it
LOOP = Path(__file__).resolve().parents[1] / "training_runs" / "reach_tiny_loop"
SETTINGS = SweepSettings(suite="reach", policy=f"checkpoint:{LOOP}", max_steps=10, env_resolution=64)
KEYS = plan_episodes("reach", [0], 2, seed=7)


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # a shared machine: never kill for others' memory
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=300 << 20,
             namespace="pi0viz-sweep-reach-test")
    yield
    ray.shutdown()


def _options(out: Path) -> RunOptions:
    return RunOptions(out=str(out), episodes_per_task=2, task_ids=[0],
                      worker=WorkerOptions(max_in_flight=1, video=False), echo=lambda line: None)


def test_reach_sweep_writes_a_per_object_table_and_grounding_on_the_named_object(local_ray, tmp_path: Path) -> None:
    from pi0viz.policy.reach_task import DISTINCT_KINDS, SUCCESS_RADIUS_M

    summary = run_sweep(SETTINGS, _options(tmp_path / "tiny"))
    assert summary["total"]["episodes"] == 2
    store = RunStore(tmp_path / "tiny")
    metas = [json.loads(str(store.load_record(k)["meta"])) for k in KEYS]
    for key, meta in zip(KEYS, metas):
        assert meta["error"] is None, meta["error"]
        assert meta["object"] in DISTINCT_KINDS and meta["prompt"] == f"reach the {meta['object']}"
        assert 2 <= meta["objects_in_view"] <= len(DISTINCT_KINDS) and meta["calls"] == 2
        # success is by distance: a failure never came within the radius, a success ended there
        assert meta["success"] == (meta["min_distance_cm"] <= 100 * SUCCESS_RADIUS_M)
        # from the home pose the gripper starts well away from the hover point (a settled scene, no free success)
        assert meta["final_distance_cm"] > 0 and meta["target_moved_cm"] < 5
        record = store.load_record(key)
        named, others = record["metrics/base_0_rgb.lift"], record["metrics/others.base_0_rgb.lift"]
        assert named.shape == (2,) and others.shape == (2,) and np.isfinite(named).all()
        assert record["fused"].shape[:4] == (2, 10, 4, 10)  # reach-tiny: 10 steps, 4 layers, 10 action tokens
    # two episode keys draw two layouts: different named objects or different scenes
    images = [store.load_record(k)["images"][0, 0] for k in KEYS]
    assert not np.array_equal(images[0], images[1])

    rows = {r["object"]: r for r in summary["objects"]}
    assert sum(r["episodes"] for r in rows.values()) == 2 and set(rows) == {m["object"] for m in metas}
    text = (tmp_path / "tiny" / "results.md").read_text()
    assert "## Per named object" in text and all(f"| {m['object']} |" in text for m in metas)
    groups = {label.split(" / ")[0] for label in summary["grounding"]}
    assert groups & {"success", "failure"}
    assert any(label.endswith("/ others.base_0_rgb.lift") for label in summary["grounding"])

    # the prompt-blind baseline on the same keys: the same scenes and prompts, no policy call, no attention
    blind = run_sweep(SweepSettings(**dict(SETTINGS.to_json(), reach_baseline="prompt-blind")),
                      _options(tmp_path / "blind"))
    assert blind["total"]["episodes"] == 2
    for key, meta in zip(KEYS, metas):
        record = RunStore(tmp_path / "blind").load_record(key)
        other = json.loads(str(record["meta"]))
        assert other["prompt"] == meta["prompt"] and other["object"] == meta["object"]
        assert other["calls"] == 0 and other["scripted_chunks"] == 2 and "fused" not in record

    from click.testing import CliRunner

    from pi0viz.cli import main

    result = CliRunner().invoke(main, ["report", str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "tiny" / "report.html").read_text()
    assert "Per named object" in page and all(m["object"] in page for m in metas)
    # the baseline's folder too: its outcome tables, and one line saying why there is no attention
    result = CliRunner().invoke(main, ["report", str(tmp_path / "blind")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "blind" / "report.html").read_text()
    assert "Per named object" in page and "a scripted baseline&#x27;s episode (no policy call" in page


def test_the_libero_example_reach_mode_draws_the_sweeps_scene(tmp_path: Path) -> None:
    """examples/libero/main.py --reach: the same key gives the sweep's layout and prompt (ReachEpisode), the
    episode's outcome carries the reach figures, and success is by distance."""
    from libero_support import load_libero_example

    from pi0viz.policy import libero_env
    from pi0viz.policy.reach_model import load_reach_policy
    from pi0viz.sweep.reach import BASE_SUITE, ReachEpisode

    example = load_libero_example("libero_example_reach")
    suite = libero_env.task_suite(BASE_SUITE)
    env, _ = libero_env.make_env(suite, 0, resolution=64)
    try:
        init_states = suite.get_task_init_states(0)
        env.seed(7)
        env.reset()
        expected = ReachEpisode(env, init_states, KEYS[1], settle=10)
        args = example.Args(policy="reach-tiny", reach=True, attention=False, seed=7)
        result = example.run_episode(env, init_states[0], "", example.InProcessPolicy(load_reach_policy()), args,
                                     tmp_path / "episode", max_steps=5, reach=(KEYS[1], init_states))
    finally:
        env.close()
    assert result.error is None and result.inference_calls == 1 and not result.success
    assert len(result.frames) == 5
    # the example's first frame shows the layout the sweep's ReachEpisode drew for the same key
    first = libero_env.policy_observation(expected.obs, expected.prompt, size=224)["observation/image"]
    assert np.abs(result.frames[0].astype(int) - first.astype(int)).mean() < 2.0
