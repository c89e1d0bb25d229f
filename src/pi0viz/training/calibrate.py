"""What LIBERO's controller does with an action: end-effector travel per control step, per axis, measured in the
simulator.

LIBERO's arm runs robosuite's OSC_POSE controller at 20 Hz: an action's position part (dims 0-2) is scaled by the
controller's `output_max` (0.05 m) into a goal offset from the current pose, and the arm covers only part of it
before the next control step. Held constant, an action settles into a steady velocity. This measures it: from a
libero_object task's init state, after `settle` still steps, hold a one-axis action of `amplitude` for `steps`
control steps and read the gripper's pose (`robot0_eef_pos`, `robot0_eef_quat`) after every step. The steady rate
is the mean displacement per step after the first `ramp` steps, over the amplitude: metres per control step per
action unit (rotation: radians per step per unit). `pi0viz.policy.reach_task.ACTION_UNIT_M` is this figure.

    .venv/bin/python -m pi0viz.training.calibrate                 # all six axes, both signs, amplitudes 0.5 and 1
    .venv/bin/python -m pi0viz.training.calibrate --axes 0 --amplitudes 1 --steps 8   # a quick look

Needs the LIBERO extra. The cameras are switched off (physics only, ~25 ms a step on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any, Sequence

import numpy as np

from pi0viz.policy import libero_env

SUITE = "libero_object"
AXES = ("x", "y", "z", "roll", "pitch", "yaw")


@dataclasses.dataclass(frozen=True)
class AxisResponse:
    """One held action: axis index (0-5), amplitude (signed action value), per-step displacement along the axis
    float64[steps] (metres, or radians for 3-5), and the steady rate per action unit (after `ramp` steps)."""

    axis: int
    amplitude: float
    per_step: np.ndarray
    rate: float
    off_axis: float  # mean |displacement| per step on the other two position axes (metres): cross-talk

    def to_json(self) -> dict[str, Any]:
        return {"axis": AXES[self.axis], "amplitude": self.amplitude, "rate_per_unit": self.rate,
                "per_step": np.round(self.per_step, 6).tolist(), "off_axis_m": self.off_axis}


def _rotvec(quat_xyzw: np.ndarray) -> np.ndarray:
    """[4] quaternion (x, y, z, w) -> its rotation as a rotation vector [3] (radians)."""
    return libero_env.quat_to_axis_angle(np.asarray(quat_xyzw, np.float64))


def _relative_rotation(q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Rotation vector [3] (world frame) taking orientation q0 to q1 (both x, y, z, w)."""
    x0, y0, z0, w0 = q0
    inv = np.array([-x0, -y0, -z0, w0])  # conjugate of a unit quaternion
    x1, y1, z1, w1 = q1
    x2, y2, z2, w2 = inv
    # q1 * q0^-1 (Hamilton product, x y z w order)
    q = np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                  w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])
    if q[3] < 0:
        q = -q
    return _rotvec(q)


class Calibrator:
    """A libero_object env with its cameras off, for held-action measurements from one init state."""

    def __init__(self, task_id: int = 0, init_state: int = 0) -> None:
        suite = libero_env.task_suite(SUITE)
        self.env, _ = libero_env.make_env(suite, task_id, resolution=64)
        self.env.reset()
        libero_env.set_cameras(self.env, False)
        self.init_state = suite.get_task_init_states(task_id)[init_state]

    def close(self) -> None:
        self.env.close()

    def hold(self, axis: int, amplitude: float, *, steps: int = 12, settle: int = 5, ramp: int = 3) -> AxisResponse:
        """Hold `amplitude` on `axis` for `steps` control steps (after `settle` still steps from the init state)."""
        self.env.set_init_state(self.init_state)
        libero_env.reset_counters(self.env)
        obs = None
        for _ in range(settle):
            obs, _, _, _ = self.env.step(list(libero_env.DUMMY_ACTION))
        poses, quats = [np.array(obs["robot0_eef_pos"])], [np.array(obs["robot0_eef_quat"])]
        action = np.array(libero_env.DUMMY_ACTION)
        action[axis] = amplitude
        for _ in range(steps):
            obs, _, _, _ = self.env.step(action.tolist())
            poses.append(np.array(obs["robot0_eef_pos"]))
            quats.append(np.array(obs["robot0_eef_quat"]))
        pos = np.stack(poses)  # [steps + 1, 3]
        if axis < 3:
            moves = np.diff(pos, axis=0)  # [steps, 3]
            per_step = moves[:, axis]
            others = np.delete(moves, axis, axis=1)
        else:
            per_step = np.array([_relative_rotation(a, b)[axis - 3] for a, b in zip(quats[:-1], quats[1:])])
            others = np.diff(pos, axis=0)
        rate = float(per_step[ramp:].mean() / amplitude)
        return AxisResponse(axis, float(amplitude), per_step, rate, float(np.abs(others[ramp:]).mean()))


def calibrate(axes: Sequence[int] = (0, 1, 2, 3, 4, 5), amplitudes: Sequence[float] = (0.5, 1.0), *,
              signs: Sequence[int] = (1, -1), steps: int = 12, settle: int = 5, ramp: int = 3,
              task_id: int = 0) -> dict[str, Any]:
    """Every (axis, sign, amplitude) response and the summary: per-axis rate per unit (mean over signs and
    amplitudes) and `position_unit_m`, the mean over the position axes measured (metres per control step per
    action unit)."""
    cal = Calibrator(task_id)
    try:
        runs = [cal.hold(a, s * amp, steps=steps, settle=settle, ramp=ramp)
                for a in axes for amp in amplitudes for s in signs]
    finally:
        cal.close()
    per_axis = {AXES[a]: float(np.mean([r.rate for r in runs if r.axis == a])) for a in axes}
    pos = [per_axis[AXES[a]] for a in axes if a < 3]
    return {"suite": SUITE, "task": task_id, "steps": steps, "settle": settle, "ramp": ramp,
            "per_axis_rate_per_unit": per_axis,
            "position_unit_m": float(np.mean(pos)) if pos else None,
            "runs": [r.to_json() for r in runs]}


def calibrate_command() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axes", default="0,1,2,3,4,5", help="action dims to measure (0-2 position, 3-5 rotation)")
    parser.add_argument("--amplitudes", default="0.5,1.0", help="action values to hold (both signs)")
    parser.add_argument("--steps", type=int, default=12, help="control steps to hold each action")
    parser.add_argument("--settle", type=int, default=5, help="still steps before each hold")
    parser.add_argument("--ramp", type=int, default=3, help="first steps left out of the steady rate")
    parser.add_argument("--task", type=int, default=0, help="libero_object task whose init state is used")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    start = time.monotonic()
    result = calibrate([int(a) for a in args.axes.split(",")], [float(a) for a in args.amplitudes.split(",")],
                       steps=args.steps, settle=args.settle, ramp=args.ramp, task_id=args.task)
    result["seconds"] = round(time.monotonic() - start, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        from pi0viz.core.writes import atomic_write

        atomic_write(args.out, text)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    for r in result["runs"]:
        print(f"{r['axis']:>5} {r['amplitude']:+.2f}: {r['rate_per_unit']:.5f} per unit per step; first steps "
              f"{r['per_step'][:4]}; off-axis {r['off_axis_m']:.5f} m")


if __name__ == "__main__":
    calibrate_command()
