"""Tiny random Mistral/Mixtral checkpoints with the real Mistral tokenizer, for offline demos and tests."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM

from .native import write_native
from .tokenizer import load_tokenizer

STAMP_FILE = "hf_mistral_kit_tiny.json"
# Tokenizer files shipped in mistral_common/data/: (file there, name in the checkpoint, vocabulary size).
TOKENIZERS = {
    "v1": ("tokenizer.model.v1", "tokenizer.model.v1", 32000),
    "v3": ("mistral_instruct_tokenizer_240323.model.v3", "tokenizer.model.v3", 32768),
}
_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the real models
    "head_dim": 32,  # vLLM's CPU attention refuses head_dim < 32
    "max_position_embeddings": 4096,
}
_FAMILIES = {
    # Mistral 7B v0.1 attends within a 4096-token window; Mixtral 8x7B attends to everything.
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": 4096}),
    "mixtral": (
        MixtralConfig,
        MixtralForCausalLM,
        {"sliding_window": None, "num_local_experts": 4, "num_experts_per_tok": 2},
    ),
}


def tiny_model(
    kind: Literal["mistral", "mixtral"] = "mistral",
    path: str | os.PathLike | None = None,
    seed: int = 0,
    native: bool = False,
    *,
    tokenizer: Literal["v1", "v3"] = "v1",
    **config_overrides: Any,
) -> Path:
    """Build a small random `kind` checkpoint at `path` and return the directory.

    The layout is Hugging Face's (`config.json`, `model.safetensors`, `generation_config.json`) unless `native=True`
    (`params.json`, `consolidated.safetensors`, plus `generation_config.json`). Both hold the real Mistral tokenizer
    from mistral-common, saved as the kit saves tokenizers (`tokenizer.json`, `tokenizer_config.json`,
    `chat_template.jinja`, and the SentencePiece file as `tokenizer.model` and under its versioned name): v1 by
    default (the tokenizer of Mistral 7B v0.1 and Mixtral 8x7B, vocabulary 32000), v3 with `tokenizer="v3"` (v0.3
    models, 32768). Transformers, vLLM, llama.cpp's converter and mistral-common all read it.

    Sizes default to hidden 64, 2 layers, 4 heads of 32 over 2 KV heads (and 4 experts, top 2, for Mixtral); any config
    field can be overridden, e.g. `sliding_window=8` to exercise the window on short sequences. Weights depend only
    on `seed` and the arguments (the caller's RNG state is left untouched).

    `path=None` builds into a new temporary directory that the caller owns. With an explicit `path`, a directory
    already built there with the same arguments is reused without rebuilding, so callers can cache the model (the
    CLI keeps its demo model under the user's cache directory); a directory holding anything else is an error.
    """
    if kind not in _FAMILIES:
        raise ValueError(f"kind must be 'mistral' or 'mixtral', got {kind!r}.")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}.")
    stamp = {"kind": kind, "seed": seed, "native": native, "tokenizer": tokenizer, "config": config_overrides}

    if path is None:
        target = Path(tempfile.mkdtemp(prefix=f"hf-mistral-kit-tiny-{kind}-"))
        _build(target, stamp)
        return target

    target = Path(path)
    if _built_with(target, stamp):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and does not hold this tiny model; delete it or pick another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build(staging, stamp)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError:
        if not _built_with(target, stamp):  # not a concurrent build of the same model
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _built_with(directory: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((directory / STAMP_FILE).read_text()) == json.loads(json.dumps(stamp))
    except (OSError, ValueError):
        return False


def _build(directory: Path, stamp: dict[str, Any]) -> None:
    config_class, model_class, family_defaults = _FAMILIES[stamp["kind"]]
    source_name, file_name, vocab_size = TOKENIZERS[stamp["tokenizer"]]
    config = config_class(**{**_SIZES, **family_defaults, "vocab_size": vocab_size, **stamp["config"]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stamp["seed"])
        model = model_class(config)

    if stamp["native"]:
        write_native(model.state_dict(), config, directory)
        model.generation_config.save_pretrained(directory)
    else:
        model.save_pretrained(directory)
    with resources.as_file(resources.files("mistral_common") / "data" / source_name) as source:
        shutil.copyfile(source, directory / file_name)
    load_tokenizer(directory / file_name).save_pretrained(directory)
    (directory / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
