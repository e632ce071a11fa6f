"""Mistral's native checkpoint layout: reading it like a Hugging Face checkpoint, and writing it.

A native directory holds `params.json` (`dim`, `n_layers`, ..., and `moe` for Mixtral), the weights in
`consolidated.safetensors` (or shards `consolidated.NN.safetensors` / `consolidated-0000N-of-0000M.safetensors`, or
legacy `consolidated.NN.pth`) with mistral-inference's names (`tok_embeddings`, `layers.N.attention.wq`, ...), and a
tokenizer file (`tokenizer.model.v3`, `tekken.json`, ...).

Architectures (`hyperparameters.config_from_params`, keys as vLLM's Mistral parser and llama.cpp's converter read
them): mistral, mixtral (`moe`), ministral (a per-layer `sliding_window` list, null for full-attention layers),
ministral3 (`yarn` with `apply_scale` false + `llama_4_scaling`; a dense `yarn` alone stays mistral) and mistral4
(multi-head latent attention: `q_lora_rank`, `kv_lora_rank`, `qk_*_head_dim`, `v_head_dim`, DeepSeek-style `moe`, as
transformers' convert_mistral4_weight_to_hf.py reads it). A vision-language release (`vision_encoder`) loads as its
text model: the vision weights are left out. Any params.json key the kit does not know is refused, never dropped;
the Large line (attention indexer) is refused with the route to its Hugging Face release.

Loading maps each native key to its transformers name and undoes Mistral's interleaved rotary layout of `wq`/`wk`
(transformers rotates halves) lazily, tensor by tensor, as transformers' own loader reads the state dict: nothing is
converted on disk, safetensors stay memory-mapped, and everything transformers does while loading (dtype casts,
`device_map`, bitsandbytes quantization, Mixtral's expert merging) applies unchanged. The `wq`/`wk` rows are read
from the file straight into their rotate-half places (`tensors.read_rows`), so the permutation costs no copy beyond
the read and native checkpoints load as fast as the Hugging Face layout. Native Mixtral experts are handed over under
transformers 4.x names (`block_sparse_moe.experts.N.w1`), which the kit Mixtral's registered conversion mapping
already knows; the first Mixtral release's stacked experts (`block_sparse_moe.w1/w2/w3`) are split into those.

Problems are reported before any weight is read, naming the file, key or field and the fix: unreadable or truncated
safetensors, missing `params.json` fields, unknown or missing keys, wrong shapes, `.pth` files holding anything but
tensors. A checkpoint is never loaded partially.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import names
from .checkpoint import Checkpoint, experts_note
from .errors import NativeCheckpointError
from .files import TensorFiles, write_safetensors
from .hyperparameters import VISION_PREFIXES, check_params, config_from_params, params_from_config
from .tensors import LazyTensor, transposed

PARAMS_FILE = "params.json"
CONFIG_FILE = "config.json"  # transformers' description of a Hugging Face checkpoint
# What describes a checkpoint directory, in the order read: one holding both is a Hugging Face checkpoint (Mistral
# ships some repositories in both layouts), as transformers reads it.
DESCRIPTION_FILES = (CONFIG_FILE, PARAMS_FILE)
NATIVE_SAFETENSORS = "consolidated.safetensors"
SAFETENSORS_SHARD = re.compile(r"^consolidated(\.\d+|-\d+-of-\d+)?\.safetensors$")
_PTH_SHARD = re.compile(r"^consolidated(\.\d+)?\.pth?$")

# A params.json is a few hundred bytes: anything far larger is not one (and is not read into memory).
MAX_PARAMS_BYTES = 1 << 20


# --- params.json -> transformers config -----------------------------------------------------------------------------


def native_checkpoint_dir(path: str | os.PathLike, subfolder: str = "") -> Path | None:
    """The directory if `path` (+ `subfolder`) is a local native checkpoint: `params.json` and no `config.json`.

    Repositories shipping both layouts (e.g. Mistral-7B-Instruct-v0.3) load the Hugging Face one, as transformers does.
    """
    directory = Path(path) / subfolder if subfolder else Path(path)
    if (directory / PARAMS_FILE).is_file() and not (directory / CONFIG_FILE).is_file():
        return directory
    return None


def read_params(directory: str | os.PathLike) -> Any:
    """The contents of a directory's `params.json` (checked by `config_dict_from_params_dict`)."""
    path = Path(directory) / PARAMS_FILE
    try:
        if not path.is_file():  # a FIFO would block the read below, a directory cannot be read
            raise OSError("not a regular file")
        with open(path, "rb") as stream:
            data = stream.read(MAX_PARAMS_BYTES + 1)
        if len(data) > MAX_PARAMS_BYTES:
            raise OSError(f"larger than {MAX_PARAMS_BYTES // 1024} KiB, which no params.json is")
        return json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
        raise NativeCheckpointError(f"Cannot read {path}: {error}.") from error


def config_dict_from_params(directory: str | os.PathLike) -> dict[str, Any]:
    """Translate a directory's `params.json` into a transformers config dict of its text model."""
    return config_dict_from_params_dict(read_params(directory), source=Path(directory) / PARAMS_FILE)


def config_dict_from_params_dict(params: Any, source: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Translate the contents of a `params.json` (named `source` in errors) into a transformers config dict: model_type
    mistral, mixtral, ministral, ministral3 or mistral4 (`hyperparameters.config_from_params`), the text model of a
    vision-language release (its `vision_encoder` is not loaded).

    Every field the kit reads is checked first (`hyperparameters.check_params`): types, bounds, consistency, and no
    key the kit does not know. The Large line (its attention indexer) is refused with the route to its Hugging Face
    release.
    """
    check_params(params, source, NativeCheckpointError)
    for name in ("lora", "quantization"):
        if params.get(name):
            raise NativeCheckpointError(
                f"{source}: `{name}` checkpoints are not supported (only unquantized models without adapters); load "
                "the Hugging Face release instead."
            )
    if params.get("model_type", "transformer") != "transformer":
        raise NativeCheckpointError(f"{source}: model_type {params['model_type']!r} is not a Mistral transformer.")
    return config_from_params(params)


# --- reading --------------------------------------------------------------------------------------------------------


def native_weight_files(directory: Path) -> list[Path]:
    """The weight files of a native directory: its safetensors shards, else its legacy `.pth` files."""
    listing = sorted(path.name for path in directory.iterdir())
    safetensors = [name for name in listing if SAFETENSORS_SHARD.match(name)]
    chosen = safetensors or [name for name in listing if _PTH_SHARD.match(name)]
    if not chosen:
        raise NativeCheckpointError(
            f"{directory} has {PARAMS_FILE} but no weights: expected {NATIVE_SAFETENSORS}, consolidated.NN.safetensors "
            "shards or legacy consolidated.NN.pth files."
        )
    for name in chosen:  # is_file() follows symbolic links: a link to a regular file is fine
        if not (directory / name).is_file():
            raise NativeCheckpointError(
                f"{directory / name} is not a regular file (a directory, FIFO, device or broken link); weights are "
                "read from regular files only. Replace it with the weights file."
            )
    return [directory / name for name in chosen]


def _check_size(config: Mapping[str, Any], files: list[Path], params: Path) -> None:
    """Refuse a params.json describing more parameters than the weight files have bytes (any dtype has >= 1)."""
    available = sum(file.stat().st_size for file in files)
    needed = names.parameter_count(config)
    if needed > available:
        raise NativeCheckpointError(
            f"{params} describes {needed:,} parameters ({config['num_hidden_layers']} layers{experts_note(config)}), "
            f"more than the {available:,} bytes of weights next to it hold: check n_layers, dim, hidden_dim and "
            "moe.num_experts there, or re-download the checkpoint."
        )


def unstack_experts(native: Mapping[str, LazyTensor], config: Mapping[str, Any], source: Any) -> dict[str, LazyTensor]:
    """Split the first Mixtral release's stacked experts (`layers.N.block_sparse_moe.w1/w2/w3`: [num_experts *
    hidden_dim, dim], expert E's rows E * hidden_dim ..., each of `w2`'s blocks transposed) into per-expert tensors
    (`...experts.E.w1.weight`); every other tensor is kept."""
    result = {}
    for key, tensor in native.items():
        found = names.find(key, "native_stacked")
        if found is None:
            result[key] = tensor
            continue
        experts, inter, hidden = config.get("num_local_experts"), config["intermediate_size"], config["hidden_size"]
        if experts is None or tensor.shape != (experts * inter, hidden):
            planned = f"[{experts} * {inter}, {hidden}]" if experts else "a Mixtral params.json with `moe`"
            raise NativeCheckpointError(
                f"{source}: stacked expert weight {key!r} has shape {list(tensor.shape)}, expected {planned} "
                "(num_experts * hidden_dim, dim) from params.json."
            )
        rows_first = found.row.shape[0] == "inter"  # w1/w3 are [inter, hidden]; w2 is stored transposed
        for expert in range(experts):
            part = tensor.sliced((slice(expert * inter, (expert + 1) * inter),), (inter, hidden))
            if not rows_first:
                part = LazyTensor(part.source, part.dtype, (hidden, inter), part.index, transposed)
            result[names.Match(found.row, found.layer, expert).name("native")] = part
    return result


class NativeCheckpoint(Checkpoint):
    """A validated native checkpoint directory, exposing its weights under transformers names (read lazily).

    Opening it reads `params.json` and the file headers only, and checks every key and shape against `params.json`.
    Use it as a context manager (or call `close()`) to release the memory maps.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = self.source = Path(directory)
        self.described_by = self.directory / PARAMS_FILE
        params = read_params(self.directory)
        self.config = config_dict_from_params_dict(params, self.described_by)
        fix = f"Re-download the file into {self.directory}."
        files = native_weight_files(self.directory)
        self._files = TensorFiles(files, fix)  # reads and checks the headers (and file sizes) only
        try:
            _check_size(self.config, files, self.described_by)
            tensors = self._files.tensors
            # A vision-language release: its text model is loaded, the vision encoder left out.
            self.vision_left_out = params.get("vision_encoder") is not None
            if self.vision_left_out:
                tensors = {key: tensor for key, tensor in tensors.items() if not key.startswith(VISION_PREFIXES)}
            self.native_tensors = unstack_experts(tensors, self.config, self.directory)
            self.check_tensors()
        except BaseException:
            self.close()
            raise

    def apply_generation_config(self, model: Any) -> None:
        """Use the directory's `generation_config.json` when it has one (native releases usually do not)."""
        if (self.directory / "generation_config.json").is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(self.directory)

    def close(self) -> None:
        self._files.close()


# --- writing --------------------------------------------------------------------------------------------------------


def write_native(native: Mapping[str, LazyTensor], config: Mapping[str, Any], dst: str | os.PathLike) -> None:
    """Write `params.json` + `consolidated.safetensors` into `dst` from native-named tensors (a checkpoint's
    `native_tensors`, or `huggingface.native_tensors_from_hf` of a state dict) and a transformers config dict."""
    dst = Path(dst)
    params = params_from_config(config, NativeCheckpointError)
    dst.mkdir(parents=True, exist_ok=True)
    write_safetensors(dst / NATIVE_SAFETENSORS, sorted(native.items(), key=lambda item: names.natural_key(item[0])))
    (dst / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
