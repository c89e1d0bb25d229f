"""LIBERO, headless and non-interactive: environment set-up and openpi's observation preprocessing.

Needs the LIBERO extra (`bash scripts/install.sh libero`). Importing this module is cheap and never imports
LIBERO; `import_libero()` does, after writing LIBERO's config.yaml (otherwise LIBERO's first import asks
questions on stdin) and defaulting MuJoCo to EGL rendering (works on CPU-only machines through Mesa).

The preprocessing matches openpi's examples/libero/main.py: both camera images are rotated 180 degrees
("to match train preprocessing"), resized with padding to 224 x 224, and the state is
[eef_pos (3), axis-angle of eef_quat (3), gripper_qpos (2)] = 8 floats.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.core.images import resize_with_pad
from pi0viz.core.writes import atomic_write, make_folder
from pi0viz.errors import MissingExtraError

LiberoUnavailable = MissingExtraError  # the LIBERO extra is not installed; the message names the install command

ENV_RESOLUTION = 256  # LIBERO renders both cameras at 256 x 256 in openpi's evaluation
MODEL_RESOLUTION = 224  # pi0's image input
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # hold still, gripper open: the "wait" steps
# Episode length limits per suite from openpi's example (longest training demo in brackets).
MAX_STEPS = {
    "libero_spatial": 220,  # 193
    "libero_object": 280,  # 254
    "libero_goal": 300,  # 270
    "libero_10": 520,  # 505
    "libero_90": 400,  # 373
}
SUITES = tuple(MAX_STEPS)



def libero_installed() -> bool:
    """True when the LIBERO extra's packages are importable (does not import them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("libero", "robosuite", "mujoco"))


def configure_libero(config_dir: str | os.PathLike | None = None) -> Path:
    """Write LIBERO's config.yaml for the installed package and point LIBERO_CONFIG_PATH at it.

    An explicit LIBERO_CONFIG_PATH that already holds a config.yaml is respected. Otherwise the config goes
    to `config_dir` (default ~/.cache/pi0viz/libero), written atomically so parallel processes agree.
    Also defaults MUJOCO_GL / PYOPENGL_PLATFORM to egl; both must be set before mujoco is imported.
    Returns the config directory.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):  # PyOpenGL must pick the same platform as MuJoCo
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    preset = os.environ.get("LIBERO_CONFIG_PATH")
    if preset and (Path(preset) / "config.yaml").is_file():
        return Path(preset)
    if not libero_installed():
        raise LiberoUnavailable("LIBERO is not installed: run `bash scripts/install.sh libero` (about a minute)")
    spec = importlib.util.find_spec("libero")
    pkg = Path(next(iter(spec.submodule_search_locations))) / "libero"
    if not (pkg / "assets").is_dir():
        raise LiberoUnavailable(
            f"LIBERO's scene assets are missing at {pkg / 'assets'}: run `bash scripts/install.sh libero`"
        )
    cfg_dir = Path(config_dir) if config_dir else Path.home() / ".cache" / "pi0viz" / "libero"
    make_folder(cfg_dir)
    entries = {
        "benchmark_root": pkg,
        "bddl_files": pkg / "bddl_files",
        "init_states": pkg / "init_files",
        "datasets": cfg_dir / "datasets",  # only for LIBERO's training code; never written by pi0viz
        "assets": pkg / "assets",
    }
    atomic_write(cfg_dir / "config.yaml", "".join(f"{key}: {value}\n" for key, value in entries.items()))
    os.environ["LIBERO_CONFIG_PATH"] = str(cfg_dir)
    return cfg_dir


def import_libero() -> tuple[Any, Any, Any]:
    """Configure, then import LIBERO. Returns (benchmark module, get_libero_path, OffScreenRenderEnv)."""
    configure_libero()
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as err:
        raise LiberoUnavailable(f"LIBERO import failed ({err}): run `bash scripts/install.sh libero`") from None
    return benchmark, get_libero_path, OffScreenRenderEnv


def task_suite(suite_name: str) -> Any:
    """The LIBERO benchmark suite object, e.g. "libero_spatial" (10 tasks, 50 init states each)."""
    if suite_name not in SUITES:
        raise ValueError(f"unknown LIBERO task suite {suite_name!r}; choose one of {list(SUITES)}")
    benchmark, _, _ = import_libero()
    return benchmark.get_benchmark_dict()[suite_name]()


def make_env(suite: Any, task_id: int, *, resolution: int = ENV_RESOLUTION, seed: int = 7) -> tuple[Any, str]:
    """Create the off-screen env of task `task_id`, as openpi does. Returns (env, task language prompt).

    Creation costs ~5-10 s on 2 CPU cores (llvmpipe); reuse the env across episodes (reset + set_init_state).
    """
    _, get_libero_path, OffScreenRenderEnv = import_libero()
    if not 0 <= task_id < suite.n_tasks:
        raise ValueError(f"task id {task_id} out of range: suite {suite.name} has tasks 0..{suite.n_tasks - 1}")
    task = suite.get_task(task_id)
    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=resolution, camera_widths=resolution)
    env.seed(seed)
    return env, str(task.language)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """[4] quaternion (x, y, z, w) -> [3] axis * angle (radians), robosuite's convention as openpi uses it."""
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):  # zero rotation: the axis is undefined
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * math.acos(w) / den


def policy_observation(obs: dict[str, np.ndarray], prompt: str, *, size: int = MODEL_RESOLUTION) -> dict[str, Any]:
    """A raw LIBERO observation -> the request openpi's LIBERO client sends to a pi0 policy.

    Returns {"observation/image": uint8 [size, size, 3] (agentview), "observation/wrist_image": uint8
    [size, size, 3] (eye in hand), both rotated 180 degrees; "observation/state": float64 [8]; "prompt": str}.
    """
    # [::-1, ::-1] flips rows and columns = a 180 degree rotation; LIBERO renders upside down vs training data.
    image = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])
    wrist = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
    state = np.concatenate(
        [obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]
    ).astype(np.float64)  # [3 + 3 + 2] = [8]
    return {
        "observation/image": resize_with_pad(image, size, size),
        "observation/wrist_image": resize_with_pad(wrist, size, size),
        "observation/state": state,
        "prompt": prompt,
    }


CAMERA_OBSERVABLES = ("agentview_image", "robot0_eye_in_hand_image")
SETTLE_STEPS = 10  # still control steps after objects are placed, as openpi's "wait" steps


def reset_counters(env: Any) -> None:
    """Zero robosuite's episode counters (control steps, simulated time, done) without a reset.

    `set_init_state` and moving objects leave them running, so an env reused for many scenes or episodes would
    reach its horizon (robosuite then refuses to step: "executing action in terminated episode")."""
    inner = env.env
    inner.timestep = 0
    inner.cur_time = 0
    inner.done = False


def set_cameras(env: Any, on: bool) -> None:
    """Switch the cameras' rendering on or off (robosuite observables). Off, a control step is physics only
    (~25 ms instead of ~0.3 s on 2 cores); switched on, the next observation renders them again."""
    inner = env.env
    cameras = tuple(n.removesuffix("_image") for n in CAMERA_OBSERVABLES)
    for name in list(inner._observables):  # the images and anything rendered with them (pi0viz's instance maps)
        if name.startswith(cameras):
            inner.modify_observable(name, "enabled", on)


class CameraSwitch:
    """`set_cameras` that acts only on a change: switching a robosuite observable resets its sampling timer, so
    switching it on again every step would shift when it samples."""

    def __init__(self, env: Any, on: bool | None = None) -> None:
        self.env = env
        self.on = on  # the cameras' state now (None: unknown, the first switch acts)

    def switch(self, on: bool) -> None:
        if on != self.on:
            set_cameras(self.env, on)
            self.on = on


def observe(env: Any) -> dict[str, np.ndarray]:
    """The env's observation now (cameras rendered if on), without stepping: after objects were moved."""
    inner = env.env
    inner.sim.forward()
    inner._update_observables(force=True)
    return inner._get_observations(force_update=True)


def settle(env: Any, steps: int = SETTLE_STEPS) -> dict[str, np.ndarray]:
    """Let placed objects come to rest: `steps` control steps of DUMMY_ACTION (cameras off while stepping), then
    the counters reset and the observation rendered. Returns that observation (positions and masks are read from
    the simulator after this)."""
    inner = env.env
    cams = [inner._observables[n].is_enabled() for n in CAMERA_OBSERVABLES if n in inner._observables]
    set_cameras(env, False)
    for _ in range(steps):
        env.step(list(DUMMY_ACTION))
    if any(cams):
        set_cameras(env, True)
    reset_counters(env)
    return observe(env)
