"""The one exception hierarchy of sdlab.

Every error raised on purpose by sdlab derives from :class:`SdlabError` and says what to fix.
"""

from __future__ import annotations


class SdlabError(Exception):
    """Base class of all sdlab errors."""


class InvalidRequestError(SdlabError, ValueError):
    """A request, prompt or option is malformed; the message says how to fix it."""


class ModelNotFoundError(SdlabError, FileNotFoundError):
    """A named model, LoRA, embedding, VAE or upscaler was not found in the models folder."""


class UnsupportedModelError(SdlabError):
    """A file could not be recognised as a supported model (wrong kind, unknown family, truncated)."""


class AdapterLoadError(SdlabError):
    """A LoRA / LyCORIS / textual-inversion file could not be loaded or applied."""


class CancelledError(SdlabError):
    """A generation was cancelled through its run context."""


class OutOfMemoryError(SdlabError, MemoryError):
    """The device ran out of memory; the message suggests settings that use less."""
