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
denoising step is part of the entity path (`step_9` = t 0.1), one subtree per exported denoising step, so they
sit side by side in one view and scrubbing either timeline keeps them in sync; a denoising-step *timeline* would
not work, because Rerun shows the latest value on the chosen timeline only, so scrubbing it would lose the call.
Layers and action tokens are averaged over the chosen ranges (recorded in `selection`): 18 layers x 50 tokens
of entities per call would make the recording as large as the JPEG tree.

Values are those of `pi0viz.episode.aggregate.call_maps`: the heat map is the exact float32 aggregate; the
images are JPEG-compressed (quality 90) unless `jpeg_quality=None`.

An episode of pi0-FAST decoding calls: the subtree is `decode_steps` (the mean over every decode step of the call,
the default) or `decode_step_{J}` (one decode step, `--steps`), and `mass/{subtree}/generated` holds the mass on the
tokens generated so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pi0viz.core.colormap import DEFAULT_COLORMAP, colormap_lut
from pi0viz.core.media_check import check_rrd
from pi0viz.core.writes import PendingFile
from pi0viz.episode.aggregate import CallMaps, Selection, spans
from pi0viz.episode.compose import linear_levels, overlay
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
        path: the .rrd file. It is written as a hidden temporary next to it while logging and, at `close`, replaces
            `path` once it reads back complete (`core.media_check.check_rrd`); `abort` discards it.
        recording_id: Rerun's id of this recording (e.g. the episode folder name).
        selection: what the maps average (recorded as the static `selection` entity).
        spawn: also stream to a Rerun viewer spawned on this machine (needs a display).
    """

    def __init__(self, path: str | os.PathLike, *, recording_id: str, selection: Selection = Selection(),
                 options: RerunOptions = RerunOptions(), spawn: bool = False, decoding: bool = False) -> None:
        rr = _rerun()
        self.rr = rr
        self.options = options
        self.lut = colormap_lut(options.colormap)
        self.path = Path(path)
        self._file = PendingFile(self.path, check_rrd, suffix=".rrd")
        self._open = True
        self.rec = rr.RecordingStream(APPLICATION_ID, recording_id=recording_id)
        layers = "all stored" if selection.layers is None else str(selection.layers)
        tokens = "all" if selection.action_tokens is None else str(selection.action_tokens)
        with self._writing():
            if spawn:
                self.rec.spawn(connect=False)
                self.rec.set_sinks(rr.FileSink(str(self._file.tmp)), rr.GrpcSink())
            else:
                self.rec.save(str(self._file.tmp))
            if decoding:  # pi0-FAST: one query per decode step, no action tokens
                text = (f"Per call (pi0-FAST, decoding): max over heads of each decode step's query on the prefix "
                        f"keys, then mean over layers {layers} and over the call's decode steps (subtree "
                        "decode_steps) or one decode step (decode_step_J); mass/.../generated: the tokens generated "
                        "so far.")
            else:
                text = (f"Per call: max over heads, then mean over layers {layers} and action tokens {tokens}; "
                        "one subtree per denoising step (step_D; step 0 is t = 1.0, pure noise).")
            self.rec.log("selection", rr.TextDocument(text), static=True)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Rerun raises RuntimeError when its file sink fails (e.g. a full disk): that becomes one OutputError line
        and the temporary is removed; anything else (a bug) discards the temporary and keeps its traceback."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            self._disconnect(quiet=True)
            raise self._file.failure(err) from None
        except BaseException:
            self.abort()
            raise

    def _time(self, control_step: int, call: int) -> None:
        self.rec.set_time("control_step", sequence=int(control_step))
        self.rec.set_time("inference_call", sequence=int(call))

    def _image(self, pixels: np.ndarray) -> Any:
        image = self.rr.Image(np.ascontiguousarray(pixels))
        q = self.options.jpeg_quality
        return image if q is None else image.compress(jpeg_quality=int(q))

    def frame(self, control_step: int, call: int, images: dict[str, np.ndarray]) -> None:
        """Log the camera frames (name -> uint8[h, w, 3]) of `control_step`, during inference call `call`."""
        with self._writing():
            self._time(control_step, call)
            for name, pixels in images.items():
                self.rec.log(f"cameras/{_part(self.rr, name)}/frame", self._image(pixels))

    def call(self, control_step: int, maps: Sequence[CallMaps]) -> None:
        """Log one inference call's aggregates (one CallMaps per exported denoising step) at `control_step`."""
        with self._writing():
            rr = self.rr
            for m in maps:  # m.step: the denoising (or decode) step, m.call: the inference call
                self._time(control_step, m.call)
                sub = f"step_{m.step}" if not m.decoding else \
                    ("decode_steps" if m.step < 0 else f"decode_step_{m.step}")
                for c, name in enumerate(m.camera_names):
                    base = f"cameras/{_part(rr, name)}/{sub}"
                    self.rec.log(f"{base}/heatmap", rr.Tensor(m.cameras[c], dim_names=["row", "col"]))
                    pixels = overlay(m.images[c], linear_levels(m.cameras[c], m.top), self.lut, self.options.alpha)
                    self.rec.log(f"{base}/overlay", self._image(pixels))
                    self.rec.log(f"mass/{sub}/{_part(rr, name)}", rr.Scalars([float(m.mass[c])]))
                self.rec.log(f"mass/{sub}/prompt", rr.Scalars([float(m.mass[-1])]))
                if m.generated_mass is not None:
                    self.rec.log(f"mass/{sub}/generated", rr.Scalars([m.generated_mass]))
                self.rec.log(f"prompt/{sub}/weights", rr.BarChart(m.prompt))
                rows = "\n".join(f"| {slot} | `{_md(piece)}` | {w:.4g} |"
                                 for slot, piece, w in zip(m.prompt_slots, m.prompt_pieces, m.prompt))
                what = (f"{_md(m.step_words)}, layers {spans(m.layers)}" if m.decoding else
                        f"denoising step {m.step} (t={m.t:.2f}), layers {spans(m.layers)}, action tokens "
                        f"{spans(m.action_tokens)}")
                self.rec.log(f"prompt/{sub}/tokens", rr.TextDocument(
                    f"call {m.call}, {what}\n\n| slot | piece | weight |\n|---|---|---|\n{rows}",
                    media_type=rr.MediaType.MARKDOWN))

    def close(self) -> Path:
        """Flush everything, check the file reads back and move it into place. Returns `path`.

        Raises:
            OutputError (one line) on a full disk or a broken file; the temporary is removed, an older `path` kept.
        """
        with self._writing():
            self._disconnect()
        return self._file.commit()

    def abort(self) -> None:
        """Stop logging and discard the file (an older `path` is untouched)."""
        self._disconnect(quiet=True)
        self._file.abort()

    def _disconnect(self, quiet: bool = False) -> None:
        if self._open:
            self._open = False
            try:
                self.rec.flush()
                self.rec.disconnect()
            except Exception:  # noqa: BLE001  (quiet: already failing; the first error is the one to report)
                if not quiet:
                    raise


def export_rerun(episode: Episode, path: str | os.PathLike, *, recording_id: str | None = None,
                 selection: Selection = Selection(), options: RerunOptions = RerunOptions(),
                 progress: Callable[[int], None] | None = None) -> Path:
    """Write a whole episode to `path` (.rrd).

    Args:
        episode: frames and maps, one set per exported denoising step (load_episode(..., steps=[...])); a decoding
            (pi0-FAST) episode: one set for the mean over each call's decode steps, or one per chosen decode step.
        recording_id: Rerun's id of the recording; default the file's stem.
    Raises:
        OutputError (one line) on a full disk or a broken file; an older `path` is kept and no temporary is left.
    """
    by_denoising_step = list(episode.by_step)  # one {call: CallMaps} per exported denoising step
    path = Path(path)
    decoding = any(m.decoding for maps in by_denoising_step for m in maps.values())
    logger = RerunLogger(path, recording_id=recording_id or path.stem, selection=selection, options=options,
                         decoding=decoding)
    frames, names = episode.frames, episode.camera_names
    columns = [frames.camera_names.index(n) for n in names]
    try:
        for control_step in range(frames.num_steps):
            call = frames.call_at(control_step)  # the inference call whose actions run now (-1: none yet)
            images = {n: frames.frames[control_step, c] for n, c in zip(names, columns)}
            logger.frame(control_step, _call_label(by_denoising_step, call), images)
            if call >= 0 and frames.call_steps[call] == control_step and call in by_denoising_step[0]:
                logger.call(control_step, [maps[call] for maps in by_denoising_step if call in maps])
            if progress:
                progress(1)
    except BaseException:
        logger.abort()
        raise
    return logger.close()


def _call_label(by_denoising_step: Sequence[dict[int, CallMaps]], call: int) -> int:
    maps = by_denoising_step[0].get(call)
    return maps.call if maps is not None else max(call, 0)


def _part(rr: Any, name: str) -> str:
    return rr.escape_entity_path_part(name)


def _md(text: str) -> str:
    return text.replace("`", "'").replace("|", "\\|").replace("\n", "\\n")
