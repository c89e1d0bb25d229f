"""An episode on disk -> frames plus one CallMaps per captured call.

Accepted inputs (`pi0viz video` / `pi0viz rerun`), read by pi0viz.core.runs:
  - an episode folder as the LIBERO example writes it: `frames.npz` (optional) and `bundles/inference_NNN.npz`
    (or the bundles directly in the folder), or `pi0viz demo`'s output folder, or its bundles folder;
  - a run or sweep folder that holds one episode with saved bundles (several: refused, naming them);
  - capture bundles given as files (with frames.npz among them, optionally).
Without frames.npz the video shows each call's own model-input images, one frame per call. The calls may be pi0-FAST
decoding bundles (pi0viz.capture/2, e.g. `pi0viz demo --model pi0-fast`): each is then shown as the mean over its
decode steps (pi0viz.episode.aggregate.decode_call_maps); an episode never mixes the two kinds.
Bundles are loaded one at a time and reduced to their (small) CallMaps, so a 40-call full-size episode never
holds more than one call's attention in memory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.runs import load_call, read_run
from pi0viz.core.selection import parse_selection
from pi0viz.episode.aggregate import CallMaps, Selection, call_maps
from pi0viz.episode.frames import EpisodeFrames, load_frames
from pi0viz.errors import EpisodeError

BUNDLES_ONLY_FPS = 2.0  # one frame per call when there are no rollout frames


@dataclasses.dataclass
class Episode:
    """Frames of every control step and the attention of the captured calls.

    Attributes:
        frames: the rollout (or, without frames.npz, one frame per captured call).
        by_step: per selected diffusion step (a decoding episode: per selected decode step, or one entry for the
            mean over every decode step), frame-call index m (as in frames.call_steps) -> that call's aggregate;
            calls without a capture (e.g. LIBERO's --attention-every k) are absent.
        prompt: the episode's prompt, when the bundles carry it.
    """

    frames: EpisodeFrames
    by_step: list[dict[int, CallMaps]]
    prompt: str | None = None

    @property
    def maps(self) -> dict[int, CallMaps]:
        """The first selected step's maps (what the video shows)."""
        return self.by_step[0]

    @property
    def camera_names(self) -> list[str]:
        """Cameras to draw: the frame columns that some capture drew (all columns if none)."""
        drawn = {n for m in self.maps.values() for n in m.camera_names}
        names = [n for n in self.frames.camera_names if n in drawn]
        return names or list(self.frames.camera_names)


def find_inputs(inputs: Sequence[str | os.PathLike], command: str = "pi0viz video") -> tuple[Path | None, list[Path]]:
    """(frames file or None, bundle files in call order) of the one episode the inputs name, read by
    pi0viz.core.runs (masks, metrics and other side files are never taken for calls). `command` names the
    command in the refusal of several episodes."""
    episode = read_run(inputs).single_episode(command)
    return episode.frames, episode.bundle_paths


def load_episode(inputs: Sequence[str | os.PathLike], selection: Selection = Selection(), *,
                 steps: str | Sequence[int] | None = None, progress: Callable[[int], None] | None = None,
                 command: str = "pi0viz video") -> Episode:
    """Read an episode (see module doc) and aggregate each call's attention as `selection` says (for each of
    `steps`, the diffusion steps, when given: a selection such as "0,9" or "5-9", pi0viz.core.selection)."""
    frames_path, bundle_paths = find_inputs(inputs, command)
    frames = load_frames(frames_path) if frames_path else None
    return episode_from_bundles((load_call(p) for p in bundle_paths), frames,
                                selection, steps=steps, progress=progress)


def episode_from_bundles(bundles: Iterable[CaptureBundle | DecodeBundle], frames: EpisodeFrames | None,
                         selection: Selection = Selection(), *, steps: str | Sequence[int] | None = None,
                         progress: Callable[[int], None] | None = None) -> Episode:
    """Aggregate bundles (consumed one at a time) against `frames` (or their own images when None)."""
    selections: list[Selection] = []
    maps: list[list[CallMaps]] = []
    prompt = None
    own_images: list[tuple[list[str], np.ndarray]] = []
    decoding: bool | None = None
    for position, bundle in enumerate(bundles):
        call = bundle.inference_step if bundle.inference_step is not None else position
        if decoding is None:
            decoding = isinstance(bundle, DecodeBundle)
        elif decoding != isinstance(bundle, DecodeBundle):
            raise EpisodeError("the bundles mix denoising (pi0, pi0.5) and decoding (pi0-FAST) calls: expected one "
                               "episode's captures")
        if position == 0 and frames is not None:
            _check_frame_cameras(frames, list(bundle.camera_names))  # before any map is made
        if not selections:  # a steps selection ("0,9", "5-9") is read against the first call's stored steps
            selections = [selection] if steps is None else [
                dataclasses.replace(selection, step=s) for s in parse_selection(steps, bundle.step_indices, "steps")]
        maps.append([call_maps(bundle, sel, call=call) for sel in selections])
        if prompt is None and bundle.prompt is not None:
            prompt = str(bundle.prompt[selection.batch_index])
        if frames is None:
            own_images.append((list(bundle.camera_names), bundle.images[selection.batch_index]))
        if progress:
            progress(1)
    if not maps:
        raise EpisodeError("no capture bundles: expected at least one inference call's .npz")
    calls = [m[0].call for m in maps]
    if len(set(calls)) != len(calls):
        raise EpisodeError(f"two bundles claim the same inference call ({sorted(calls)}): expected one per call")
    order = np.argsort(calls)
    maps = [maps[i] for i in order]
    if frames is None:
        names = own_images[0][0]
        if any(n != names for n, _ in own_images):
            raise EpisodeError("the bundles have different camera slots; expected one episode's captures")
        stacked = np.stack([own_images[i][1] for i in order])  # [calls, C, h, w, 3]
        frames = EpisodeFrames(stacked, names, np.arange(len(maps)), BUNDLES_ONLY_FPS)
        return Episode(frames, [{i: m[k] for i, m in enumerate(maps)} for k in range(len(selections))], prompt)
    drawn = {n for m in maps for n in m[0].camera_names}
    if drawn and not drawn & set(frames.camera_names):
        raise EpisodeError(f"frames.npz shows cameras {frames.camera_names}, none of which the bundles draw "
                           f"({sorted(drawn)}): expected the frames of the same episode")
    last = len(frames.call_steps) - 1
    if calls and max(calls) > last:
        raise EpisodeError(f"a bundle is inference call {max(calls)}, but frames.npz records only "
                           f"{last + 1} call(s): expected the frames of the same episode")
    return Episode(frames, [{m[0].call: m[k] for m in maps} for k in range(len(selections))], prompt)


def _check_frame_cameras(frames: EpisodeFrames, slots: list[str]) -> None:
    """Every frame column must be one of the bundles' camera slots: a frames file of another episode or robot
    would otherwise give a plain video with no attention drawn on it."""
    unknown = [n for n in frames.camera_names if n not in slots]
    if unknown:
        raise EpisodeError(f"frames.npz names camera(s) {unknown} that the bundles do not have (their cameras: "
                           f"{slots}): expected the frames of the same episode")
