"""One dispatch for every checkpoint the kit opens: a GGUF file, a native directory, or a Hugging Face one.

`find_checkpoint` says what a `from_pretrained(path, **kwargs)` call names (the kit reads GGUF files and native
directories itself; Hugging Face checkpoints, local or on the Hub, are transformers' own), `local_checkpoint` what a
local directory holds (conversions read Hugging Face directories too), and `CheckpointSource` opens either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .checkpoint import Checkpoint
from .gguf import GGUFCheckpoint, config_dict_from_gguf_file, gguf_checkpoint_file
from .huggingface import HFCheckpoint
from .native import CONFIG_FILE, PARAMS_FILE, NativeCheckpoint, config_dict_from_params, native_checkpoint_dir


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint in one of the layouts the kit reads: "gguf" (a file), "native" or "hf" (directories)."""

    layout: Literal["gguf", "native", "hf"]
    path: Path

    @property
    def description(self) -> Path:
        """What describes the model: the GGUF file, params.json or config.json."""
        return (
            self.path
            if self.layout == "gguf"
            else self.path / (PARAMS_FILE if self.layout == "native" else CONFIG_FILE)
        )

    def config_dict(self) -> dict[str, Any]:
        """The transformers config dict of the checkpoint (headers and metadata only are read)."""
        if self.layout == "gguf":
            return config_dict_from_gguf_file(self.path)
        if self.layout == "native":
            return config_dict_from_params(self.path)
        with self.open() as checkpoint:
            return checkpoint.config

    def open(self) -> Checkpoint:
        """The validated checkpoint (a context manager releasing its files)."""
        return {"gguf": GGUFCheckpoint, "native": NativeCheckpoint, "hf": HFCheckpoint}[self.layout](self.path)


def find_checkpoint(path: str | os.PathLike | None, kwargs: Mapping[str, Any] | None = None) -> CheckpointSource | None:
    """The GGUF file (`gguf_file=`, or `path` itself; downloaded when it is on the Hub) or native directory (`path` +
    `subfolder=`) that `from_pretrained(path, **kwargs)` names; None for anything else (transformers' own)."""
    kwargs = kwargs or {}
    gguf_path = gguf_checkpoint_file(path, kwargs)
    if gguf_path is not None:
        return CheckpointSource("gguf", gguf_path)
    directory = native_checkpoint_dir(path, kwargs.get("subfolder", "")) if path is not None else None
    return CheckpointSource("native", directory) if directory is not None else None


def local_checkpoint(directory: str | os.PathLike) -> CheckpointSource | None:
    """What a local directory holds: a native checkpoint (params.json and no config.json), a Hugging Face one
    (config.json), or None."""
    directory = Path(directory)
    if native_checkpoint_dir(directory) is not None:
        return CheckpointSource("native", directory)
    return CheckpointSource("hf", directory) if (directory / CONFIG_FILE).is_file() else None
