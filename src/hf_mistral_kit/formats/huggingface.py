"""Hugging Face checkpoint directories as a source of conversions: `config.json` and safetensors under Mistral's
native names.

Loading a Hugging Face checkpoint is transformers' own job; the kit reads one only to convert it (to the native
layout or to GGUF): every weight is renamed through the tensor table (`names`), Mixtral's experts fused by
transformers 5.x (`mlp.experts.gate_up_proj`) are sliced per expert, and `wq`/`wk` go back to Mistral's interleaved
rotary layout, lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import names
from .checkpoint import Checkpoint, listed
from .errors import NativeCheckpointError
from .files import TensorFiles
from .hyperparameters import as_config_dict
from .native import CONFIG_FILE, SAFETENSORS_SHARD
from .tensors import LazyTensor, RotaryToNative, as_lazy

HF_SAFETENSORS = "model.safetensors"


def hf_weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a Hugging Face checkpoint directory (by its index when it has one)."""
    index = directory / f"{HF_SAFETENSORS}.index.json"
    if index.is_file():
        return [directory / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    # Repositories shipping both layouts also hold consolidated*.safetensors: those are not transformers' weights.
    files = sorted(path for path in directory.glob("*.safetensors") if not SAFETENSORS_SHARD.match(path.name))
    if not files:
        raise NativeCheckpointError(
            f"{directory} has no safetensors weights; re-save it with `save_pretrained` (safetensors is the default)."
        )
    return files


def checked_hf_tensors(
    hf_tensors: Mapping[str, torch.Tensor | LazyTensor], config: Mapping[str, Any]
) -> dict[str, LazyTensor]:
    """Transformers-named tensors of a causal LM described by `config` (a config dict) under 4.x names (experts per
    expert), every key and shape checked against the config (lazily read)."""
    expected = names.expected_hf_shapes(config)
    tensors = {key: as_lazy(value) for key, value in hf_tensors.items() if not key.endswith("rotary_emb.inv_freq")}
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)
    per_expert = _per_expert(tensors, config)
    for key, tensor in per_expert.items():
        if key not in expected:
            raise NativeCheckpointError(
                f"Cannot export weight {key!r}: it has no place in a native {config['model_type']} causal LM "
                f"({config['num_hidden_layers']} layers). Only {config['model_type']} causal-LM checkpoints convert."
            )
        if tensor.shape != expected[key]:
            raise NativeCheckpointError(
                f"Cannot export weight {key!r}: shape {list(tensor.shape)}, but the config implies "
                f"{list(expected[key])}."
            )
    missing = [key for key in expected if key not in per_expert]
    if missing:
        raise NativeCheckpointError(f"Cannot export: the checkpoint lacks {listed(missing)}.")
    return per_expert


def native_tensors_from_hf(
    hf_tensors: Mapping[str, torch.Tensor | LazyTensor], config: Mapping[str, Any]
) -> dict[str, LazyTensor]:
    """Transformers-named tensors (`checked_hf_tensors`) under native names, `wq`/`wk` in Mistral's interleaved
    rotary layout (lazily)."""
    return _to_native(checked_hf_tensors(hf_tensors, config), config)


def _to_native(checked: Mapping[str, LazyTensor], config: Mapping[str, Any]) -> dict[str, LazyTensor]:
    native = {}
    for key, tensor in checked.items():
        found = names.find(key, "hf", config)
        heads = config[found.row.rotary] if found.row.rotary else None
        native[found.name("native")] = tensor if heads is None else tensor.with_transform(RotaryToNative(heads))
    return native


def _per_expert(tensors: dict[str, LazyTensor], config: Mapping[str, Any]) -> dict[str, LazyTensor]:
    """Transformers 5.x names to 4.x ones: the router renamed, fused experts sliced into per-expert tensors."""
    result = {}
    for key, tensor in tensors.items():
        fused = names.find(key, "hf_fused", config)
        if fused is None:
            found = names.find(key, "hf", config)
            result[found.name("hf") if found is not None else key] = tensor
            continue
        parts = names.fused_parts(fused.row)
        experts, rows, cols = tensor.shape if len(tensor.shape) == 3 else (None, None, None)
        if experts != names.experts_count(config) or rows % len(parts):
            raise NativeCheckpointError(f"Cannot export weight {key!r}: unexpected shape {list(tensor.shape)}.")
        part_rows = rows // len(parts)
        for expert in range(experts):
            for i, row in enumerate(parts):
                index = (expert, slice(i * part_rows, (i + 1) * part_rows))
                name = names.Match(row, fused.layer, expert).name("hf")
                result[name] = LazyTensor(tensor.source, tensor.dtype, (part_rows, cols), index)
    return result


class _Fused:
    """`[...]` of a fused experts tensor: each expert's parts concatenated along the rows, the experts stacked."""

    def __init__(self, parts: list[list[LazyTensor]]):
        self.parts = parts

    def __getitem__(self, index: Any) -> torch.Tensor:
        fused = torch.stack([torch.cat([part.read() for part in expert]) for expert in self.parts])
        return fused[index]


def fused_hf_tensors(hf_tensors: Mapping[str, LazyTensor], config: Mapping[str, Any]) -> dict[str, LazyTensor]:
    """Transformers-named tensors with DeepSeek-style routed experts (Mistral 4) fused into transformers 5.x's
    `mlp.experts.gate_up_proj` / `down_proj`, the only layout transformers loads them from (it has no conversion
    mapping for Mistral 4); Mixtral's per-expert names, which transformers' mapping reads, are kept. Lazily read."""
    result: dict[str, LazyTensor] = {}
    groups: dict[str, dict[int, dict[names.Tensor, LazyTensor]]] = {}
    for key, tensor in hf_tensors.items():
        found = names.find(key, "hf", config)
        if found is None or found.row.hf_fused is None or found.row.part != names.MOE:
            result[key] = tensor
            continue
        groups.setdefault(found.name("hf_fused"), {}).setdefault(found.expert, {})[found.row] = tensor
    for fused_name, by_expert in groups.items():
        experts = [by_expert[expert] for expert in range(len(by_expert))]
        order = names.fused_parts(next(iter(experts[0])))
        parts = [[expert[row] for row in order] for expert in experts]
        first = parts[0][0]
        shape = (len(parts), sum(part.shape[0] for part in parts[0]), first.shape[1])
        result[fused_name] = LazyTensor(_Fused(parts), first.dtype, shape)
    return result


class HFCheckpoint(Checkpoint):
    """A Hugging Face checkpoint directory read for a conversion: its config (through transformers, so defaults
    apply) and its weights under native names (and under transformers' 4.x names, checked, as `hf_tensors`)."""

    described_by = CONFIG_FILE

    def __init__(self, directory: Path):
        from transformers import AutoConfig

        from ..architectures import find_architecture

        self.directory = self.source = Path(directory)
        if not (self.directory / CONFIG_FILE).is_file():
            raise NativeCheckpointError(f"{self.directory} is not a Hugging Face checkpoint (no config.json).")
        self.config = as_config_dict(AutoConfig.from_pretrained(self.directory))
        row = find_architecture(self.config.get("model_type"))
        if row is None:
            raise ValueError(f"Expected a Mistral-family config, got model_type {self.config.get('model_type')!r}.")
        if row.vision or (row.latent_attention and row.model_type != "mistral4"):
            kind = "a vision-language model" if row.vision else "an attention-indexer model"
            raise NativeCheckpointError(
                f"{self.directory} holds {kind} ({row.model_type}); the kit converts the text models mistral, "
                "mixtral, ministral, ministral3 and mistral4 only. Load it from this Hugging Face folder as it is (the "
                "kit's Auto classes read it), or convert it with transformers' or llama.cpp's own tools."
            )
        self._files = TensorFiles(hf_weight_files(self.directory), f"Re-download the file into {self.directory}.")
        try:
            self.hf_tensors = checked_hf_tensors(self._files.tensors, self.config)
            self.native_tensors = _to_native(self.hf_tensors, self.config)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._files.close()
