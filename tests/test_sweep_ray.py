"""A real local Ray sweep in the real LIBERO simulator with the tiny pi0: 2 tasks x 2 episodes of one call each.

Run A goes through uninterrupted with one env worker and no video (so its cameras render only for the steps a call
reads). Run B uses two env workers; when its first episode is
written, the test SIGKILLs the process of a worker that is mid-episode. B must still finish every episode, and
every record of B (videos on: every step rendered) must equal A's in content (all arrays, grounding metrics included, and the outcome; timings
aside). Running B again must redo nothing. Small on purpose: 64 px cameras, 2 wait steps, one call (5 env steps) per episode.
"""

from __future__ import annotations

import json
import os
import signal
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
from pi0viz.sweep.store import RunStore, record_content  # noqa: E402

SETTINGS = SweepSettings(policy="tiny", max_calls=1, num_steps_wait=2, env_resolution=64)
KEYS = plan_episodes("libero_spatial", [0, 1], 2, seed=7)


@pytest.fixture(scope="module")
def local_ray():
    # This machine is shared: Ray's memory monitor would kill our workers for other processes' memory.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=300 << 20,
             namespace="pi0viz-sweep-test")
    yield
    ray.shutdown()


def _options(out: Path, workers: int, video: bool = True, **kw) -> RunOptions:
    return RunOptions(out=str(out), episodes_per_task=2, task_ids=[0, 1], env_workers=workers,
                      worker=WorkerOptions(max_in_flight=1, video=video), echo=lambda line: None, **kw)


def test_sweep_survives_a_killed_worker_and_matches_an_uninterrupted_run(local_ray, tmp_path: Path) -> None:
    # A without videos: its cameras render only for the calls' steps; B's render every step (for the video)
    a = run_sweep(SETTINGS, _options(tmp_path / "a", workers=1, video=False))
    assert a["total"] == {"planned": 4, "episodes": 4, "successes": 0, "success_rate": 0.0}  # untrained: 0 %

    store_b = RunStore(tmp_path / "b")
    killed: list[str] = []
    events: list[str] = []

    def kill_a_busy_worker(kind: str, info: dict) -> None:
        events.append(kind)
        if kind != "done" or killed:
            return
        for marker in sorted(store_b.episodes.glob("*.started")):  # an episode some worker is in the middle of
            pid = json.loads(marker.read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(marker.stem)
            return

    b = run_sweep(SETTINGS, _options(tmp_path / "b", workers=2, on_progress=kill_a_busy_worker))
    assert killed, "no worker was mid-episode when the first episode finished"
    assert "redo" in events and events.count("done") == 4  # the killed episode was redone, nothing twice
    assert a["grounding_status"] == "computed" and b["grounding"] == a["grounding"]
    assert "success / base_0_rgb.lift" not in a["grounding"] and "failure / base_0_rgb.lift" in a["grounding"]
    assert b["total"] == a["total"] and [r["successes"] for r in b["tasks"]] == [r["successes"] for r in a["tasks"]]

    store_a = RunStore(tmp_path / "a")
    for key in KEYS:
        ra, rb = store_a.load_record(key), store_b.load_record(key)
        ca, cb = record_content(ra), record_content(rb)
        assert sorted(ca) == sorted(cb)
        meta_a, meta_b = json.loads(str(ca.pop("meta"))), json.loads(str(cb.pop("meta")))
        assert meta_a.pop("video") is None and meta_b.pop("video") == f"{key.name}.mp4" and meta_a == meta_b
        for name in ca:  # NaN: a metric undefined in both runs (e.g. lift of a camera without the objects)
            assert np.array_equal(ca[name], cb[name], equal_nan=ca[name].dtype.kind == "f"), f"{key.name}: {name}"
        # grounding (on by default): the objects segmented in the call's frames, metrics per call
        assert ra["metrics/base_0_rgb.lift"].shape == (1,) and ra["metrics/base_0_rgb.lift"].dtype == np.float32
        assert 0 <= ra["metrics/base_0_rgb.pointing_hit"][0] <= 1 and ra["metrics/base_0_rgb.entropy"][0] > 0
        assert np.isfinite(ra["metrics/base_0_rgb.lift"]).all()  # the agentview sees the task's objects
        meta = json.loads(str(ra["meta"]))
        assert meta["calls"] == 1 and meta["steps"] == 2 + 5 and meta["error"] is None
        assert ra["fused"].shape == (1, 10, 4, 50, len(ra["keys"])) and ra["fused"].dtype == np.float16
        assert store_b.video_path(key).stat().st_size > 0
        # the images the model saw are the env's rotated agentview/wrist frames: not blank
        assert ra["images"].shape == (1, 2, 224, 224, 3) and ra["images"].std() > 5
    assert not list(store_b.episodes.glob("*.started")) and not list(store_b.episodes.glob(".*"))

    events.clear()
    again = run_sweep(SETTINGS, _options(tmp_path / "b", workers=1, on_progress=kill_a_busy_worker))
    assert events == [] and again["total"] == b["total"]  # finished episodes are never redone
