"""Where checkpoints come from: the Hugging Face Hub's keyword arguments, and the kit's own cache directory.

Nothing here imports anything but the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The arguments of `from_pretrained` (transformers, huggingface_hub) that say where and how to download a file.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
# What else `from_pretrained` callers pass that only matters for picking or loading a transformers class.
LOADING_KWARGS = (
    "trust_remote_code",
    "use_fast",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
    "_configuration_file",
)

# What a checkpoint's tokenizer (and the config deciding who loads it) consists of: the files fetched from the Hub
# before the model itself.
TOKENIZER_AND_CONFIG_FILES = (
    "tokenizer*",
    "*.model.v*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "config.json",
    "params.json",
    "tekken*.json",
)

# The kit's cache directory (tiny models, tokenizers rebuilt from GGUF files): this variable, else
# $XDG_CACHE_HOME/hf-mistral-kit or ~/.cache/hf-mistral-kit.
CACHE_ENV = "HF_MISTRAL_KIT_CACHE"


def hub_kwargs(kwargs: Mapping[str, Any], *, subfolder: bool = True) -> dict[str, Any]:
    """The Hub arguments among `kwargs` (without `subfolder` when the caller resolves it itself)."""
    return {name: kwargs[name] for name in HUB_KWARGS if name in kwargs and (subfolder or name != "subfolder")}


def without_hub_kwargs(kwargs: Mapping[str, Any], *also: str) -> dict[str, Any]:
    """`kwargs` without the Hub and class-picking arguments (and the names in `also`)."""
    dropped = {*HUB_KWARGS, *LOADING_KWARGS, *also}
    return {name: value for name, value in kwargs.items() if name not in dropped}


def cache_dir() -> Path:
    """The kit's cache directory: $HF_MISTRAL_KIT_CACHE, else $XDG_CACHE_HOME/hf-mistral-kit or
    ~/.cache/hf-mistral-kit. The demo's tiny checkpoints, `tiny_model()`'s builds and tokenizers rebuilt from GGUF
    files live there."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hf-mistral-kit"
