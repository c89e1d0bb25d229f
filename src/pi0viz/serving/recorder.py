"""Server-side recording: every call's capture bundle (and optionally its attention_viz tree) written where the
server runs, so an unmodified openpi client (e.g. openpi's LIBERO example in its Python 3.8 environment, where
pi0viz cannot be installed) gets pi0viz's attention with no change on the client side.

Layout under the record folder:
    bundles/call_NNNNN.npz            one capture bundle per recorded call, in arrival order (attention float16);
                                      a pi0-FAST policy's calls are decoding bundles (pi0viz.capture/2)
    bundles/call_NNNNN.observation.npz   the call's request as the server received it (pi0viz.observation/1: the
                                      robot state, which bundles do not hold; `pi0viz knockout --bundle` reads it)
    attention_viz/inference_timestep_N/...   with tree=True: the rendered tree of each call (N = call index)

Numbering: only calls whose bundle was written get a number, so call_00000 ... call_NNNNN have no gaps; a request
that failed (bad request, internal error) or a call that could not be recorded leaves no hole that looks like a
lost file. Disk guard (pi0viz.core.diskspace, the sweep's): the recorder refuses to start unless one call fits, and
stops recording (one logged line; the robot keeps getting its actions) when the next call would not fit.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.decode_bundle import DecodeBundle, save_decode_bundle
from pi0viz.core.diskspace import JPEG_BYTES_PER_FILE, check_free
from pi0viz.core.observation_file import observation_path, save_observation
from pi0viz.core.selection import folder_index
from pi0viz.core.writes import make_folder
from pi0viz.errors import DiskSpaceError, OutputError, Pi0vizError

# Shape of a full-size pi0 LIBERO call (D, L, N, Q, S, cameras): the estimate when a policy does not say its own.
FULL_PI0 = (10, 18, 8, 51, 867, 3)
SMALL_ARRAYS_BYTES = 64 * 1024  # token ids, masks, times, actions, prompt: a few KB; generous


def _hint(tree: bool) -> str:
    """What writes less, for the guard's one line."""
    return "without --record-tree: ~10 KB per JPEG" if tree else "each call's bundle is written whole"


def call_bytes_estimate(policy: Any, *, tree: bool = False) -> int:
    """Upper bound of the bytes one recorded call writes: its bundle (attention float16 D x L x N x Q x S, the
    images, small arrays) plus, with `tree`, its JPEG tree (D x L x Q x (cameras + 1) files).

    Read from the policy's config when it has pi0viz's (`num_steps`, `config.expert.depth/num_heads`,
    `config.suffix_len`, `config.prefix_len`, `config.image_keys`); a pi0-FAST config (`max_decoding_steps`) counts
    J decode steps x its LLM's layers and heads x 1 query x `cache_len` keys; any other policy counts as full-size
    pi0.
    """
    config = getattr(policy, "config", None)
    if hasattr(config, "max_decoding_steps") and hasattr(config, "cache_len"):  # pi0-FAST (pi0viz.model.pi0_fast)
        llm = config.llm
        return _call_bytes(int(config.max_decoding_steps), int(llm.depth), int(llm.num_heads), 1,
                           int(config.cache_len), len(config.image_keys), tree=tree)
    try:
        config = policy.config
        steps, layers, heads = int(policy.num_steps), int(config.expert.depth), int(config.expert.num_heads)
        queries = int(config.suffix_len)
        keys, cameras = int(config.prefix_len) + queries, len(config.image_keys)
    except (AttributeError, TypeError, ValueError):  # not pi0viz's JAX policy (e.g. LeRobot): assume the largest
        steps, layers, heads, queries, keys, cameras = FULL_PI0
    return _call_bytes(steps, layers, heads, queries, keys, cameras, tree=tree)


def _call_bytes(steps: int, layers: int, heads: int, queries: int, keys: int, cameras: int, *, tree: bool) -> int:
    attention = steps * layers * heads * queries * keys * 2  # float16 probabilities
    images = cameras * 224 * 224 * 3
    jpegs = steps * layers * queries * (cameras + 1) * JPEG_BYTES_PER_FILE if tree else 0
    return attention + images + SMALL_ARRAYS_BYTES + jpegs


class CallRecorder:
    """Writes each call's bundle to `<folder>/bundles/call_NNNNN.npz`, numbering recorded calls from 0 across
    connections (a restarted server continues after the highest number present).

    Args:
        folder: the record folder (created; an operator's path, never one taken from a request).
        tree: also render each call's attention_viz tree under `<folder>/attention_viz` (slow at full size:
            one pi0 call is 36,000 JPEG files; the next call waits for it).
        workers: render processes for the tree (None: all cores).
        call_bytes: expected bytes of one call (`call_bytes_estimate(policy, tree=tree)`); the folder is created
            only when that much (plus the guard's headroom) is free, else DiskSpaceError (one line).

    Calls must not overlap: `next_index` names the call in flight and `record` takes that number only once the
    bundle is written (the policy server runs one inference at a time).
    """

    def __init__(self, folder: str | Path, *, tree: bool = False, workers: int | None = None,
                 call_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.tree = tree
        self.workers = workers
        self.stopped: str | None = None  # why recording stopped (the disk filled), else None
        self._lock = threading.Lock()
        if call_bytes is not None:  # before anything is created: a refused start leaves nothing behind
            check_free(self.folder, call_bytes, what="recording one call", hint=_hint(tree))
        make_folder(self.folder / "bundles", "choose another record folder")
        existing = sorted((self.folder / "bundles").glob("call_*.npz"))
        self._next = 1 + max((int(p.stem.split("_")[1]) for p in existing if p.stem.split("_")[1].isdigit()),
                             default=-1)

    def next_index(self) -> int:
        """The number the call in flight gets if it is recorded (not reserved: a failed call takes no number)."""
        with self._lock:
            return self._next

    def record(self, bundle: CaptureBundle | DecodeBundle, index: int,
               observation: Mapping[str, Any] | None = None) -> Path | None:
        """Save one call's bundle (probabilities as float16: half the size, ~3 significant digits) as call `index`,
        and `observation` (the request the policy got: {key: array or str}) next to it as
        call_NNNNN.observation.npz; render its tree when asked. Returns the bundle path, or None when recording has
        stopped.

        Raises OutputError / DiskSpaceError (one line, no advice to --resume: the server has none) when the bundle
        or its tree cannot be written; DiskSpaceError also stops recording for the rest of the run.
        """
        index = folder_index(index, "the recorded call's index", OutputError)  # names call_NNNNN and its tree
        if self.stopped is not None:
            return None
        if getattr(bundle, "attention_kind", "probs") == "probs" and bundle.attention.dtype != np.float16:
            bundle = dataclasses.replace(bundle, attention=bundle.attention.astype(np.float16))
        need = sum(np.asarray(a).nbytes for a in bundle.to_arrays().values())
        if observation is not None:
            need += sum(np.asarray(v).nbytes for v in observation.values() if not isinstance(v, str))
        if self.tree:
            d, l_, *_, q, _ = bundle.attention.shape
            need += d * l_ * q * (len(bundle.camera_names) + 1) * JPEG_BYTES_PER_FILE
        try:
            check_free(self.folder, need, what=f"recording call {index}", hint=_hint(self.tree))
        except DiskSpaceError as err:
            self.stopped = str(err)
            raise DiskSpaceError(f"recording stopped: {err}; the server keeps answering without recording") \
                from None
        with self._lock:
            if index != self._next:
                raise RuntimeError(f"call {index} recorded out of turn (next is {self._next}): calls overlapped")
            target = self.folder / "bundles" / f"call_{index:05d}.npz"
            save = save_decode_bundle if isinstance(bundle, DecodeBundle) else save_bundle
            path = save(bundle, target)  # atomic; OutputError
            self._next += 1  # numbered once its bundle exists: no gaps from failed calls
        if observation is not None:  # a request that cannot be stored (ConfigError, one line) keeps its bundle
            save_observation(observation, observation_path(path))
        if self.tree:
            self._render_tree(bundle, index)
        return path

    def _render_tree(self, bundle: CaptureBundle | DecodeBundle, index: int) -> None:
        from pi0viz.render import RenderJob, RenderOptions, run_job
        from pi0viz.render.files import RESUME_HINT

        try:
            if isinstance(bundle, DecodeBundle):  # pi0-FAST: the decode_step_J/layer_L tree
                from pi0viz.render.decode import render_decode_bundle

                render_decode_bundle(bundle, self.folder / "attention_viz", RenderOptions(), inference_step=index)
            else:
                run_job(RenderJob(bundle, str(self.folder / "attention_viz"), index,
                                  RenderOptions(workers=self.workers)))
        except Pi0vizError as err:
            # The renderer's advice is `pi0viz render --resume`; the server has no --resume, so say what holds here.
            text = str(err).replace(f"; {RESUME_HINT}", "").replace(RESUME_HINT, "")
            raise type(err)(f"{text}; call {index}'s bundle is kept, its tree is incomplete (render it later with "
                            f"`pi0viz render {self.folder / 'bundles' / f'call_{index:05d}.npz'} --out "
                            f"{self.folder / 'attention_viz'}`)") from None
