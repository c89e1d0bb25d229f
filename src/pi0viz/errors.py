"""One error family. Every user fault pi0viz can name is a `Pi0vizError` whose message is one line saying what
was wrong and what was expected; each CLI command catches the root once, prints that line and exits 1.

Anything else (a bug in pi0viz) keeps its traceback. The subclasses also derive from the builtin their callers
used to catch (ValueError, RuntimeError, ImportError), so `except ValueError` around a bundle load still works.
"""

from __future__ import annotations


class Pi0vizError(Exception):
    """Root of every error pi0viz raises for a user's input, files or environment."""


class BundleError(Pi0vizError, ValueError):
    """A capture bundle is malformed; the message says what was expected."""


class FusionError(Pi0vizError, ValueError):
    """The attention cannot be turned into maps as asked; the message says what was expected and the fix."""


class SelectionError(Pi0vizError, ValueError):
    """A selection (steps, layers, action tokens, cameras) does not fit the capture."""


class ColormapError(Pi0vizError, ValueError):
    """Unknown colormap name."""


class RenderError(Pi0vizError, RuntimeError):
    """Rendering failed; the message says what happened and what to do."""


class OutputError(RenderError):
    """Writing an output file failed (read-only folder, full disk, no inodes, a path through a file)."""


class DiskSpaceError(OutputError):
    """A run would write more than the disk can hold; the message says how much is needed and free."""


class ViewerError(Pi0vizError, ValueError):
    """The viewer cannot be built as asked; the message says what was expected."""


class AnalysisError(Pi0vizError, ValueError):
    """Metrics, masks, summaries or a report cannot be made as asked; the message says what was expected."""


class JsonFileError(Pi0vizError, ValueError):
    """A JSON file pi0viz reads (metrics, results, knockout results) is missing, too large, not JSON, holds NaN or
    Infinity, or is not of the expected format; `reason` is the message without the file's path."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class CheckpointError(Pi0vizError, ValueError):
    """A checkpoint, norm-stats file or tokenizer is missing, corrupted, or does not match the config."""


class ObservationError(Pi0vizError, ValueError):
    """An observation given to a policy has a wrong key, shape, dtype or value."""


class PolicyOutputError(Pi0vizError, RuntimeError):
    """A policy produced an unusable answer (non-finite actions) for a valid observation: a fault of the checkpoint
    or the model, not of the request (a policy server answers it as an internal error)."""


class ConfigError(Pi0vizError, ValueError):
    """Unknown config name or an impossible combination of options."""


class ProtocolError(Pi0vizError, ValueError):
    """Bytes on the wire are not what openpi's protocol (msgpack-numpy) expects."""


class ServerError(Pi0vizError, RuntimeError):
    """A policy server answered a request with an error message."""


class EpisodeError(Pi0vizError, ValueError):
    """An episode (frames file, bundles, video or Rerun export) cannot be read or written as asked."""


class CaptureError(Pi0vizError, RuntimeError):
    """Attention cannot be captured from a model as asked (unknown layout, no eager weights, no call ran)."""


class CompiledModelError(CaptureError):
    """The PyTorch model or its sampler is compiled with torch.compile: hooks inside the graph never run."""


class MissingExtraError(Pi0vizError, ImportError):
    """An optional part (JAX model, PyTorch capture, LIBERO, ...) is not installed; the message names the extra."""


def require(module: str, extra: str, purpose: str) -> None:
    """Raise MissingExtraError unless `module` imports.

    Args:
        module: the import name, e.g. "jax".
        extra: the pip extra that brings it, e.g. "jax" for `pip install 'pi0viz[jax]'`.
        purpose: what needs it, e.g. "the pi0 model".
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{purpose} needs {module!r}, which is not installed; "
                                f"install it with: pip install 'pi0viz[{extra}]'")
