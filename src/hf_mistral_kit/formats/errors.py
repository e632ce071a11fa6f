"""What the checkpoint formats raise: one error per format, each naming the file, the problem and the fix."""

from __future__ import annotations


class NativeCheckpointError(ValueError):
    """A Mistral native checkpoint (or a conversion to or from one) that cannot be read correctly; also a weights
    file (safetensors, `.pth`) that cannot be read."""


class GGUFError(ValueError):
    """A GGUF file the kit cannot load or write exactly (the message says why and what to do)."""
