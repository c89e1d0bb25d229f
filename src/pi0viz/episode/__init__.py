"""Attention over a whole episode: a video synced to the rollout and a Rerun recording (docs/episode.md).

numpy core (frames format, per-call aggregates, frame composition); imageio-ffmpeg (extra [video]) encodes the
MP4 and rerun-sdk (extra [rerun]) writes the .rrd, each imported only when used. No model framework here.
"""

from pi0viz.episode.aggregate import CallMaps, Selection, call_maps
from pi0viz.episode.frames import EpisodeFrames, FrameRecorder, load_frames, save_frames
from pi0viz.episode.source import Episode, episode_from_bundles, load_episode

__all__ = ["CallMaps", "Episode", "EpisodeFrames", "FrameRecorder", "Selection", "call_maps", "episode_from_bundles",
           "load_episode", "load_frames", "save_frames"]
