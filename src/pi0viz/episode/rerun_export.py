"""An episode's attention as a Rerun recording (.rrd), written offline or live from a control loop.

Entities (camera names are escaped as entity path parts):

    cameras/{camera}/frame                      Image     the rollout frame          every control step
    cameras/{camera}/step_{D}/heatmap           Tensor    float32 [rows, cols]       every captured call
    cameras/{camera}/step_{D}/overlay           Image     model input + heat map     every captured call
    prompt/step_{D}/weights                     BarChart  float32 [n] valid tokens   every captured call
    prompt/step_{D}/tokens                      TextDocument  token, piece, weight   every captured call
    mass/step_{D}/{camera | prompt}             Scalars   attention mass per region  every captured call
    selection                                   TextDocument  what was averaged      static

Timelines: `control_step` (one per env step) and `inference_call` (the call whose actions run). The
diffusion step is part of the entity path (`step_9` = t 0.1), one subtree per exported step, so steps sit side
by side in one view and scrubbing either timeline keeps them in sync; a step *timeline* would not work,
because Rerun shows the latest value on the chosen timeline only, so scrubbing steps would lose the call.
Layers and action tokens are averaged over the chosen ranges (recorded in `selection`): 18 layers x 50 tokens
of entities per call would make the recording as large as the JPEG tree.

Values are those of `pi0viz.episode.aggregate.call_maps`: the heat map is the exact float32 aggregate; the
images are JPEG-compressed (quality 90) unless `jpeg_quality=None`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pi0viz.core.colormap import DEFAULT_COLORMAP, colormap_lut
from pi0viz.core.writes import make_folder
from pi0viz.episode.aggregate import CallMaps, Selection, spans
from pi0viz.episode.compose import overlay, to_levels
from pi0viz.episode.source import Episode
from pi0viz.errors import require

APPLICATION_ID = "pi0viz"
DEFAULT_JPEG_QUALITY = 90


def _rerun() -> Any:
    require("rerun", "rerun", "the Rerun export")
    import rerun as rr

    return rr


@dataclasses.dataclass(frozen=True)
class RerunOptions:
    """Attributes:
        jpeg_quality: compress frames and overlays as JPEG at this quality (1..100); None = raw pixels.
        colormap, alpha: of the overlay (its scale: the call's own top, cameras and prompt shared).
    """

    jpeg_quality: int | None = DEFAULT_JPEG_QUALITY
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.6


class RerunLogger:
    """Writes one episode to a .rrd file as it happens: `frame` every control step, `call` per captured call.

    Args:
        path: the .rrd file (written while logging; complete after `close`).
        recording_id: Rerun's id of this recording (e.g. the episode folder name).
        selection: what the maps average (recorded as the static `selection` entity).
        spawn: also stream to a Rerun viewer spawned on this machine (needs a display).
    """

    def __init__(self, path: str | os.PathLike, *, recording_id: str, selection: Selection = Selection(),
                 options: RerunOptions = RerunOptions(), spawn: bool = False) -> None:
        rr = _rerun()
        self.rr = rr
        self.options = options
        self.lut = colormap_lut(options.colormap)
        self.path = Path(path)
        make_folder(self.path.parent)
        self.rec = rr.RecordingStream(APPLICATION_ID, recording_id=recording_id)
        if spawn:
            self.rec.spawn(connect=False)
            self.rec.set_sinks(rr.FileSink(str(self.path)), rr.GrpcSink())
        else:
            self.rec.save(str(self.path))
        layers = "all stored" if selection.layers is None else str(selection.layers)
        tokens = "all" if selection.action_tokens is None else str(selection.action_tokens)
        self.rec.log("selection", rr.TextDocument(
            f"Per call: max over heads, then mean over layers {layers} and action tokens {tokens}; "
            "one subtree per diffusion step (step_D; step 0 is t = 1.0, pure noise)."), static=True)

    def _time(self, step: int, call: int) -> None:
        self.rec.set_time("control_step", sequence=int(step))
        self.rec.set_time("inference_call", sequence=int(call))

    def _image(self, pixels: np.ndarray) -> Any:
        image = self.rr.Image(np.ascontiguousarray(pixels))
        q = self.options.jpeg_quality
        return image if q is None else image.compress(jpeg_quality=int(q))

    def frame(self, step: int, call: int, images: dict[str, np.ndarray]) -> None:
        """Log the camera frames (name -> uint8[h, w, 3]) of control step `step`, during call `call`."""
        self._time(step, call)
        for name, pixels in images.items():
            self.rec.log(f"cameras/{_part(self.rr, name)}/frame", self._image(pixels))

    def call(self, step: int, maps: Sequence[CallMaps]) -> None:
        """Log one call's aggregates (one CallMaps per exported diffusion step) at control step `step`."""
        rr = self.rr
        for m in maps:
            self._time(step, m.call)
            sub = f"step_{m.step}"
            for c, name in enumerate(m.camera_names):
                base = f"cameras/{_part(rr, name)}/{sub}"
                self.rec.log(f"{base}/heatmap", rr.Tensor(m.cameras[c], dim_names=["row", "col"]))
                pixels = overlay(m.images[c], to_levels(m.cameras[c], m.top), self.lut, self.options.alpha)
                self.rec.log(f"{base}/overlay", self._image(pixels))
                self.rec.log(f"mass/{sub}/{_part(rr, name)}", rr.Scalars([float(m.mass[c])]))
            self.rec.log(f"mass/{sub}/prompt", rr.Scalars([float(m.mass[-1])]))
            self.rec.log(f"prompt/{sub}/weights", rr.BarChart(m.prompt))
            rows = "\n".join(f"| {slot} | `{_md(piece)}` | {w:.4g} |"
                             for slot, piece, w in zip(m.prompt_slots, m.prompt_pieces, m.prompt))
            self.rec.log(f"prompt/{sub}/tokens", rr.TextDocument(
                f"call {m.call}, diffusion step {m.step} (t={m.t:.2f}), layers {spans(m.layers)}, action tokens "
                f"{spans(m.action_tokens)}\n\n| slot | piece | weight |\n|---|---|---|\n{rows}",
                media_type=rr.MediaType.MARKDOWN))

    def close(self) -> None:
        """Flush everything to the file."""
        self.rec.flush()
        self.rec.disconnect()


def export_rerun(episode: Episode, path: str | os.PathLike, *, recording_id: str | None = None,
                 selection: Selection = Selection(), options: RerunOptions = RerunOptions(),
                 progress: Callable[[int], None] | None = None) -> Path:
    """Write a whole episode to `path` (.rrd).

    Args:
        episode: frames and maps, one set per exported diffusion step (load_episode(..., steps=[...])).
        recording_id: Rerun's id of the recording; default the file's stem.
    """
    per_step = list(episode.by_step)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix or '.rrd'}")
    logger = RerunLogger(tmp, recording_id=recording_id or path.stem, selection=selection, options=options)
    frames, names = episode.frames, episode.camera_names
    columns = [frames.camera_names.index(n) for n in names]
    try:
        for step in range(frames.num_steps):
            m = frames.call_at(step)
            images = {n: frames.frames[step, c] for n, c in zip(names, columns)}
            logger.frame(step, _call_label(per_step, m), images)
            if m >= 0 and frames.call_steps[m] == step and m in per_step[0]:
                logger.call(step, [maps[m] for maps in per_step if m in maps])
            if progress:
                progress(1)
        logger.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _call_label(per_step: Sequence[dict[int, CallMaps]], m: int) -> int:
    maps = per_step[0].get(m)
    return maps.call if maps is not None else max(m, 0)


def _part(rr: Any, name: str) -> str:
    return rr.escape_entity_path_part(name)


def _md(text: str) -> str:
    return text.replace("`", "'").replace("|", "\\|").replace("\n", "\\n")
