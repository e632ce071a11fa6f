"""Tiny random Mistral/Mixtral checkpoints with the real Mistral tokenizer, for offline demos and tests.

Built once per set of arguments and cached (see `tiny_model`); a cached build that was truncated or corrupted since is
noticed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from .convert import STAGING_MARKER, staging_dir
from .formats.errors import NativeCheckpointError
from .formats.files import safetensors_size
from .hub import cache_dir
from .versions import REFERENCE_FORMATS

STAMP_FILE = "hf_mistral_kit_tiny.json"
_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the real models
    "head_dim": 32,  # vLLM's CPU attention refuses head_dim < 32
    "max_position_embeddings": 4096,
}
# Mistral 7B v0.1 attends within a 4096-token window; Mixtral 8x7B attends to everything.
_FAMILY_DEFAULTS = {
    "mistral": {"sliding_window": 4096},
    "mixtral": {"sliding_window": None, "num_local_experts": 4, "num_experts_per_tok": 2},
}


def tiny_model(
    kind: Literal["mistral", "mixtral"] = "mistral",
    path: str | os.PathLike | None = None,
    seed: int = 0,
    native: bool = False,
    *,
    tokenizer: Literal["v1", "v2", "v3", "v7", "tekken"] = "v1",
    **config_overrides: Any,
) -> Path:
    """Build a small random `kind` checkpoint at `path` and return the directory.

    The layout is Hugging Face's (`config.json`, `model.safetensors`, `generation_config.json`) unless `native=True`
    (`params.json`, `consolidated.safetensors`, plus `generation_config.json`). Both hold the real Mistral tokenizer
    from mistral-common, saved as the kit saves tokenizers (`tokenizer.json`, `tokenizer_config.json`,
    `chat_template.jinja`, and the SentencePiece file as `tokenizer.model` and under its versioned name): v1 by
    default (the tokenizer of Mistral 7B v0.1 and Mixtral 8x7B, vocabulary 32000), v2 with `tokenizer="v2"`, v3 with
    `tokenizer="v3"` (v0.3 models, 32768), v7 with `tokenizer="v7"` (Mistral-Large-2411, 32768), and Mistral-Nemo's
    tekken.json with `tokenizer="tekken"` (131072): every file of `hf_mistral_kit.versions.REFERENCE_FORMATS`.
    Transformers, vLLM, llama.cpp's converter and mistral-common all read it (a tekken folder converts in llama.cpp
    without its tekken.json where mistral-common is installed: see the README).

    Sizes default to hidden 64, 2 layers, 4 heads of 32 over 2 KV heads (and 4 experts, top 2, for Mixtral); any config
    field can be overridden, e.g. `sliding_window=8` to exercise the window on short sequences. Weights depend only
    on `seed` and the arguments (the caller's RNG state is left untouched).

    Builds are cached by their arguments: `path=None` returns a directory under `cache_dir()/tiny/` that is shared by
    every call with the same arguments (and the same kit, transformers and torch versions), so treat it as read-only
    (copy it to modify it). With an explicit `path`, a directory already built there with the same arguments is
    reused without rebuilding; a directory holding anything else is an error. A cached build whose files were
    truncated or changed since is rebuilt, with a warning.
    """
    if kind not in _FAMILY_DEFAULTS:
        raise ValueError(f"kind must be 'mistral' or 'mixtral', got {kind!r}.")
    if tokenizer not in REFERENCE_FORMATS:
        raise ValueError(f"tokenizer must be one of {', '.join(REFERENCE_FORMATS)}, got {tokenizer!r}.")
    stamp = {"kind": kind, "seed": seed, "native": native, "tokenizer": tokenizer, "config": config_overrides}
    target = Path(path) if path is not None else _cache_path(stamp)

    state = _state(target, stamp)
    if state == "built":
        return target
    if state == "foreign":
        raise FileExistsError(f"{target} exists and does not hold this tiny model; delete it or pick another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    try:
        _build(staging, stamp)
        (staging / STAGING_MARKER).unlink()
        if state == "damaged":
            warnings.warn(
                f"the cached tiny {kind} in {target} was incomplete or damaged (a file is missing, truncated or "
                "changed): rebuilt it.",
                stacklevel=2,
            )
            shutil.rmtree(target)
        elif target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError:
        if _state(target, stamp) != "built":  # not a concurrent build of the same model
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cache_path(stamp: dict[str, Any]) -> Path:
    """Where `tiny_model(path=None)` keeps the build of these arguments."""
    versions = {name: _version(name) for name in ("hf-mistral-kit", "transformers", "torch")}
    key = json.dumps({"stamp": stamp, "versions": versions}, sort_keys=True, default=repr)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "tiny" / f"{stamp['kind']}-{digest}"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _state(directory: Path, stamp: dict[str, Any]) -> Literal["absent", "built", "damaged", "foreign"]:
    """What `directory` holds: nothing, this build intact, this build damaged since, or something else."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return "absent"
    try:
        recorded = json.loads((directory / STAMP_FILE).read_text())
        files = recorded.pop("files", None)  # None: built by a kit that recorded no files
    except (OSError, ValueError, AttributeError):
        return "foreign"
    if recorded != json.loads(json.dumps(stamp)):
        return "foreign"
    return "built" if _files_intact(directory, files) else "damaged"


def _files_intact(directory: Path, files: Any) -> bool:
    """The recorded files and nothing else are there, each with its recorded size and a readable safetensors header
    (a caller that added or removed files in a shared build gets a fresh one)."""
    if not isinstance(files, dict) or not files:
        return False
    present = {path.name for path in directory.iterdir() if path.name != STAMP_FILE and path.name[0] != "."}
    if present != set(files):
        return False
    for name, size in files.items():
        file = directory / name
        try:
            if not file.is_file() or file.stat().st_size != size:
                return False
            if file.suffix == ".safetensors" and safetensors_size(file, "") != size:
                return False
        except (OSError, NativeCheckpointError):
            return False
    return True


def _build(directory: Path, stamp: dict[str, Any]) -> None:
    import torch
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    from .formats.huggingface import native_tensors_from_hf
    from .formats.hyperparameters import as_config_dict
    from .formats.native import write_native
    from .tokenizers.loading import load_tokenizer, reference_tokenizer_file

    row = REFERENCE_FORMATS[stamp["tokenizer"]]
    shutil.copyfile(reference_tokenizer_file(row.key), directory / row.file_name)
    tokenizer = load_tokenizer(directory / row.file_name)
    sizes = {**_SIZES, **_FAMILY_DEFAULTS[stamp["kind"]], "vocab_size": len(tokenizer), **stamp["config"]}
    config = AutoConfig.for_model(stamp["kind"], **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stamp["seed"])
        model = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)

    if stamp["native"]:
        config_dict = as_config_dict(config)
        write_native(native_tensors_from_hf(model.state_dict(), config_dict), config_dict, directory)
        model.generation_config.save_pretrained(directory)
    else:
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    files = {
        file.name: file.stat().st_size for file in sorted(directory.iterdir()) if file.is_file() and file.name[0] != "."
    }
    (directory / STAMP_FILE).write_text(json.dumps({**stamp, "files": files}, indent=2) + "\n")
