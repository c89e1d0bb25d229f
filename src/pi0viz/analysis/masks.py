"""Object masks on the model's patch grid: what fraction of each 14 x 14 patch the task's objects cover.

A mask is drawn in the camera's own frame (LIBERO: 256 x 256, upside down). It goes through exactly the image
transform the policy input went through, so that patch (r, c) of the mask is patch (r, c) of the image the
model saw:

    1. rotate 180 degrees (openpi's examples/libero/main.py: `img[::-1, ::-1]`, "to match train preprocessing"),
    2. resize with pad to 224 x 224 (pi0viz's one `resize_with_pad`, openpi-client's geometry, bilinear),
    3. average each 14 x 14 block -> coverage in [0, 1] per patch of the 16 x 16 grid.

Step 2 runs on the mask as a 0/255 image, so the bilinear filter gives partial pixels at the object's edges
and the block mean is the covered area fraction (padding bars, if any, cover nothing).

Masks of a call are stored next to its bundle: `inference_007.npz` -> `inference_007.masks.npz`
(MASKS_FORMAT, see docs/capture-bundle.md), read with `allow_pickle=False` like the bundle.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pi0viz.core.images import resize_with_pad
from pi0viz.core.npzfile import NpzReader
from pi0viz.core.writes import atomic_write
from pi0viz.errors import AnalysisError, BundleError

MASKS_FORMAT = "pi0viz.masks/1"
MODEL_PATCH_PX = 14  # SigLIP So400m/14


def patch_coverage(mask: np.ndarray, *, grid: tuple[int, int] = (16, 16), rotate: bool = True) -> np.ndarray:
    """A camera-frame object mask -> covered fraction of each model-input patch.

    Args:
        mask: bool[h, w] (or any array, nonzero = object) in the camera's frame as the simulator renders it.
        grid: (rows, cols) of the patch grid; the model input is rows*14 x cols*14 pixels.
        rotate: apply openpi's LIBERO 180-degree rotation first (False for frames that are already upright).

    Returns:
        float32[rows, cols] in [0, 1].
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2 or m.size == 0:
        raise AnalysisError(f"a mask must be [H, W], got shape {list(m.shape)}")
    img = np.where(m != 0, np.uint8(255), np.uint8(0))
    if rotate:
        img = img[::-1, ::-1]
    rows, cols = grid
    H, W = rows * MODEL_PATCH_PX, cols * MODEL_PATCH_PX
    rgb = np.ascontiguousarray(np.repeat(img[..., None], 3, axis=-1))
    model = resize_with_pad(rgb, H, W)[..., 0].astype(np.float32) / 255.0  # [h, w]
    return model.reshape(rows, MODEL_PATCH_PX, cols, MODEL_PATCH_PX).mean(axis=(1, 3))


@dataclasses.dataclass
class CallMasks:
    """Object masks of one call on the patch grid.

    Attributes:
        camera_names: [C] camera slots, as in the bundle.
        objects: [K] object names (e.g. LIBERO's objects of interest of the task).
        coverage: float32[K, C, rows, cols], covered fraction of each patch, per object.
        has_mask: bool[C], which camera slots have a mask (a padded slot or a camera without segmentation: False).
    """

    camera_names: list[str]
    objects: list[str]
    coverage: np.ndarray
    has_mask: np.ndarray

    def union(self, objects: Sequence[str] | None = None) -> np.ndarray:
        """float32[C, rows, cols], coverage of the given objects together (default all); instance masks do not
        overlap, so this is their sum (clipped to 1 against rounding)."""
        idx = range(len(self.objects)) if objects is None else [self._index(o) for o in objects]
        total = self.coverage[list(idx)].sum(axis=0) if len(idx) else np.zeros(self.coverage.shape[1:], np.float32)
        return np.clip(total, 0.0, 1.0).astype(np.float32)

    def _index(self, name: str) -> int:
        try:
            return self.objects.index(name)
        except ValueError:
            raise AnalysisError(f"no mask for object {name!r}; the masks hold {self.objects}") from None

    def validate(self) -> None:
        K, C = len(self.objects), len(self.camera_names)
        if self.coverage.ndim != 4 or self.coverage.shape[:2] != (K, C):
            raise AnalysisError(f"coverage must be [K={K} objects, C={C} cameras, rows, cols], "
                                f"got {list(self.coverage.shape)}")
        if self.has_mask.shape != (C,) or self.has_mask.dtype != bool:
            raise AnalysisError(f"has_mask must be bool [C={C}], got {self.has_mask.dtype} {list(self.has_mask.shape)}")
        if self.coverage.dtype.kind != "f" or not np.isfinite(self.coverage).all():
            raise AnalysisError("coverage must be finite floats")
        if self.coverage.size and (self.coverage.min() < 0 or self.coverage.max() > 1 + 1e-6):
            raise AnalysisError("coverage must be fractions in [0, 1]")


# LIBERO camera -> pi0's camera slot, as openpi's LIBERO policy inputs map them (the right wrist slot is padded).
LIBERO_CAMERAS = {"agentview": "base_0_rgb", "robot0_eye_in_hand": "left_wrist_0_rgb"}
LIBERO_SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


class LiberoSegmenter:
    """Instance masks of a LIBERO task's objects for exactly the frames in the env's observations.

    robosuite samples a camera image once per control step, after the first physics substep, so re-rendering
    after `env.step` shows a slightly later state (the arm moves by up to 24 substeps). The segmenter therefore
    adds its own observables, `<camera>_pi0viz_instances`, sampled at the cameras' rate right after them in the
    same update: each observation then carries the instance map of the very state its image shows.

    Why not robosuite's segmentation sensor (`camera_segmentations="instance"`): robosuite 1.4.0 decodes the ID
    colors with uint8 arithmetic that overflows under numpy 2 (OverflowError), and enabling it shrinks every site
    of the model, so the frames would no longer be those of a plain evaluation. Here the env's own off-screen
    context draws the ID colors (same camera, size and row order as the images) and they are decoded in int32.
    Rendering the IDs leaves the RGB frames bit-identical.

    The task's objects are LIBERO's `obj_of_interest` (from the task's BDDL); a name that is not an object
    instance (a region such as "wooden_cabinet_1_top_region") stands for the instance it starts with.
    Attach a new segmenter after every `env.reset()` (a hard reset rebuilds the model; the new segmenter takes over
    the observables of the previous one).
    """

    SUFFIX = "_pi0viz_instances"

    def __init__(self, env, resolution: int = 256) -> None:
        from robosuite.utils.observables import Observable, sensor

        inner = getattr(env, "env", env)  # LIBERO's wrapper holds the robosuite env in .env
        # Render through whatever sim the env has now: a hard reset frees the old sim and its GL context
        # (robosuite's _destroy_sim) but keeps added observables, so a sensor bound to the old sim would render
        # through a freed context (and hang the next render). Weak: no cycle env -> sensor -> segmenter -> env.
        self._env = weakref.ref(inner)
        self.resolution = int(resolution)
        instances = list(inner.model.instances_to_ids.keys())
        self.objects: dict[str, int] = {}  # object name -> instance index
        for name in inner.obj_of_interest:
            if name in instances:
                self.objects[name] = instances.index(name)
                continue
            for i, inst in enumerate(instances):
                if name.startswith(inst + "_"):
                    self.objects[inst] = i
        if not self.objects:
            raise AnalysisError(f"none of the task's objects {list(inner.obj_of_interest)} is an object instance "
                                f"of the scene ({instances})")
        # geom id -> instance index (-1: not part of any instance, e.g. the table or the floor)
        self.geom_instance = np.full(inner.sim.model.ngeom, -1, np.int32)
        for geom, inst in inner.model.geom_ids_to_instances.items():
            self.geom_instance[geom] = instances.index(inst)
        for camera in LIBERO_CAMERAS:
            rate = 1.0 / inner._observables[f"{camera}_image"]._sampling_timestep  # sampled with the image

            @sensor(modality="image")
            def instances_sensor(obs_cache, camera=camera):
                return self.instances(camera)

            name = camera + self.SUFFIX
            if name in inner._observables:  # attached before this (hard) reset: take the sensor over
                inner.modify_observable(observable_name=name, attribute="sensor", modifier=instances_sensor)
            else:
                inner.add_observable(Observable(name=name, sensor=instances_sensor, sampling_rate=rate))
                # A new observable's sampling clock starts now, the camera's has run since the env was made: put it
                # in the camera's phase, or the masks of the first episode in an env show a later substep than
                # its images (and differ from the same episode's masks in a reused env).
                camera_clock, clock = inner._observables[f"{camera}_image"], inner._observables[name]
                clock._time_since_last_sample = camera_clock._time_since_last_sample
                clock._sampled = camera_clock._sampled
                clock._current_delay = camera_clock._current_delay

    def instances(self, camera: str) -> np.ndarray:
        """int32[h, w] instance index of every pixel of `camera` now (-1 = none), oriented like the env's images."""
        import mujoco
        from robosuite.macros import IMAGE_CONVENTION
        from robosuite.utils.mjcf_utils import IMAGE_CONVENTION_MAPPING

        sim = self._env().sim
        ctx, n = sim._render_context_offscreen, self.resolution
        ctx.render(width=n, height=n, camera_id=sim.model.camera_name2id(camera), segmentation=True)
        rgb = np.empty((n, n, 3), np.uint8)
        mujoco.mjr_readPixels(rgb=rgb, depth=None, viewport=mujoco.MjrRect(0, 0, n, n), con=ctx.con)
        segid = rgb[..., 0].astype(np.int32) | rgb[..., 1].astype(np.int32) << 8 | rgb[..., 2].astype(np.int32) << 16
        scene = ctx.scn
        lut = np.full(scene.ngeom + 1, -1, np.int32)  # ID color (segid + 1) -> instance; 0 = background
        for i in range(scene.ngeom):
            g = scene.geoms[i]
            if g.segid != -1 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM and g.objid < len(self.geom_instance):
                lut[g.segid + 1] = self.geom_instance[g.objid]
        segid[segid > scene.ngeom] = 0
        return lut[segid][:: IMAGE_CONVENTION_MAPPING[IMAGE_CONVENTION]]  # the row order robosuite gives images

    def call_masks(self, obs: Mapping[str, np.ndarray], *, grid: tuple[int, int] = (16, 16)) -> CallMasks:
        """Masks of the task's objects in the frames of observation `obs` (the ones the policy is about to see), on
        the patch grid of pi0's three camera slots (the padded right wrist has no mask)."""
        objects = list(self.objects)
        cov = np.zeros((len(objects), len(LIBERO_SLOTS)) + tuple(grid), np.float32)
        has = np.zeros(len(LIBERO_SLOTS), bool)
        for camera, slot in LIBERO_CAMERAS.items():
            key = camera + self.SUFFIX
            if key not in obs:
                raise AnalysisError(f"the observation has no {key!r}: attach the LiberoSegmenter after env.reset()")
            seg = np.asarray(obs[key])
            c = LIBERO_SLOTS.index(slot)
            for k, name in enumerate(objects):
                cov[k, c] = patch_coverage(seg == self.objects[name], grid=grid)
            has[c] = True
        return CallMasks(camera_names=list(LIBERO_SLOTS), objects=objects, coverage=cov, has_mask=has)


def masks_path(bundle_path: str | os.PathLike) -> Path:
    """Where the masks of a bundle live: `name.npz` -> `name.masks.npz` in the same folder."""
    p = Path(bundle_path)
    return p.with_name(p.name[: -len(".npz")] + ".masks.npz" if p.name.endswith(".npz") else p.name + ".masks.npz")


def save_masks(masks: CallMasks, path: str | os.PathLike) -> Path:
    """Write masks atomically as an .npz (format MASKS_FORMAT)."""
    masks.validate()
    return atomic_write(path, lambda f: np.savez_compressed(
        f, format=np.asarray(MASKS_FORMAT), camera_names=np.asarray(masks.camera_names, str),
        objects=np.asarray(masks.objects, str).reshape(-1), coverage=masks.coverage.astype(np.float32),
        has_mask=masks.has_mask.astype(bool)))


def load_masks(path: str | os.PathLike) -> CallMasks:
    """Read masks written by `save_masks` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"no masks at {path} (expected the .masks.npz written next to the bundle)")
    try:
        with NpzReader(path) as z:  # headers checked before any array is allocated; object arrays refused
            arrays = {k: z.load(k) for k in z.headers}
    except BundleError as err:  # the guarded reader's one line, which names the file
        raise AnalysisError(f"not a pi0viz masks file: {err}") from None
    return masks_from_arrays(arrays, str(path))


def masks_from_arrays(arrays: Mapping[str, np.ndarray], source: str = "masks") -> CallMasks:
    fmt = str(np.asarray(arrays.get("format", "")))
    if fmt != MASKS_FORMAT:
        raise AnalysisError(f"{source}: format {fmt!r}, this pi0viz reads {MASKS_FORMAT!r}")
    missing = [k for k in ("camera_names", "objects", "coverage", "has_mask") if k not in arrays]
    if missing:
        raise AnalysisError(f"{source}: missing keys {missing}")
    masks = CallMasks(camera_names=[str(c) for c in np.asarray(arrays["camera_names"]).reshape(-1)],
                      objects=[str(o) for o in np.asarray(arrays["objects"]).reshape(-1)],
                      coverage=np.asarray(arrays["coverage"]), has_mask=np.asarray(arrays["has_mask"]))
    masks.validate()
    return masks


def masks_for_bundle(masks: CallMasks, camera_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The union coverage and has_mask reordered to a bundle's camera slots (matched by name).

    Returns:
        (float32[C, rows, cols], bool[C]) in the bundle's camera order; cameras the masks do not name get none.
    """
    union = masks.union()
    rows, cols = union.shape[1:]
    out = np.zeros((len(camera_names), rows, cols), np.float32)
    has = np.zeros(len(camera_names), bool)
    for c, name in enumerate(camera_names):
        if name in masks.camera_names:
            i = masks.camera_names.index(name)
            out[c], has[c] = union[i], masks.has_mask[i]
    if not has.any():
        raise AnalysisError(f"the masks name cameras {masks.camera_names}, none of which is a masked-in camera of "
                            f"the bundle {list(camera_names)}")
    return out, has
