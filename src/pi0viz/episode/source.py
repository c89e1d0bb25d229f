"""An episode on disk -> frames plus one CallMaps per captured call.

Accepted inputs (`pi0viz video` / `pi0viz rerun`):
  - an episode folder as the LIBERO example writes it: `frames.npz` (optional) and `bundles/inference_NNN.npz`
    (or the bundles directly in the folder);
  - capture bundles given as files.
Without frames.npz the video shows each call's own model-input images, one frame per call.
Bundles are loaded one at a time and reduced to their (small) CallMaps, so a 40-call full-size episode never
holds more than one call's attention in memory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pi0viz.core.bundle import CaptureBundle, load_bundle
from pi0viz.episode.aggregate import CallMaps, Selection, call_maps
from pi0viz.episode.frames import FRAMES_FILE, EpisodeFrames, load_frames
from pi0viz.errors import EpisodeError

BUNDLES_ONLY_FPS = 2.0  # one frame per call when there are no rollout frames


@dataclasses.dataclass
class Episode:
    """Frames of every control step and the attention of the captured calls.

    Attributes:
        frames: the rollout (or, without frames.npz, one frame per captured call).
        by_step: per selected diffusion step, frame-call index m (as in frames.call_steps) -> that call's
            aggregate; calls without a capture (e.g. LIBERO's --attention-every k) are absent.
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


def find_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[Path | None, list[Path]]:
    """(frames file or None, bundle files in call order) from a folder or a list of .npz files."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise EpisodeError("no input: expected an episode folder or capture bundle files (.npz)")
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        frames = root / FRAMES_FILE
        bundles = sorted((root / "bundles").glob("*.npz")) or sorted(p for p in root.glob("*.npz")
                                                                     if p.name != FRAMES_FILE)
        if not bundles:
            raise EpisodeError(f"{root} holds no capture bundles: expected bundles/inference_NNN.npz or *.npz")
        return (frames if frames.is_file() else None), bundles
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EpisodeError(f"not a file: {missing[0]} (expected one episode folder or capture bundle .npz files)")
    frames = [p for p in paths if p.name == FRAMES_FILE]
    return (frames[0] if frames else None), [p for p in paths if p.name != FRAMES_FILE]


def load_episode(inputs: Sequence[str | os.PathLike], selection: Selection = Selection(), *,
                 steps: Sequence[int] | None = None, progress: Callable[[int], None] | None = None) -> Episode:
    """Read an episode (see module doc) and aggregate each call's attention as `selection` says (for each of
    `steps`, the diffusion steps, when given)."""
    frames_path, bundle_paths = find_inputs(inputs)
    frames = load_frames(frames_path) if frames_path else None
    return episode_from_bundles((load_bundle(p) for p in bundle_paths), frames,
                                selection, steps=steps, progress=progress)


def episode_from_bundles(bundles: Iterable[CaptureBundle], frames: EpisodeFrames | None,
                         selection: Selection = Selection(), *, steps: Sequence[int] | None = None,
                         progress: Callable[[int], None] | None = None) -> Episode:
    """Aggregate bundles (consumed one at a time) against `frames` (or their own images when None)."""
    selections = [selection] if not steps else [dataclasses.replace(selection, step=int(s)) for s in steps]
    maps: list[list[CallMaps]] = []
    prompt = None
    own_images: list[tuple[list[str], np.ndarray]] = []
    for position, bundle in enumerate(bundles):
        call = bundle.inference_step if bundle.inference_step is not None else position
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
    last = len(frames.call_steps) - 1
    if calls and max(calls) > last:
        raise EpisodeError(f"a bundle is inference call {max(calls)}, but frames.npz records only "
                           f"{last + 1} call(s): expected the frames of the same episode")
    return Episode(frames, [{m[0].call: m[k] for m in maps} for k in range(len(selections))], prompt)

