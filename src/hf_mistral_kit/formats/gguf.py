"""GGUF, llama.cpp's checkpoint format, in and out for Mistral, Mixtral and Ministral 3.

llama.cpp's `llama` architecture holds Mistral and Mixtral; its `mistral3` architecture (what convert_hf_to_gguf.py
writes for Ministral 3 and the text models of Mistral Small 3.x) is llama's layout and keys plus YaRN
(`rope.scaling.*`, `yarn_log_multiplier` 1: no attention magnitude correction) and llama 4's query scaling
(`attention.temperature_scale`): read as ministral3, or as mistral without them. `mistral4` and `deepseek2` (latent
attention) and ministral's per-layer windows are refused with the route; everything below applies to both
architectures under their own key prefix.

Reading (`GGUFCheckpoint`, used by the kit's `from_pretrained(..., gguf_file=...)`): llama.cpp files Mistral and Mixtral
under its `llama` architecture, with Mistral's native tensor layout (`wq`/`wk` rows in interleaved rotary order) under
its own names. The file's header is read by `gguf_container`, bounded, and every metadata value the kit reads must be
stored as a GGUF type of its kind (an integer key as an integer type, arrays only where llama.cpp reads one). Each
GGUF name maps to a native name through the tensor table (`names`), and from there the checks every checkpoint shares
take over: every weight lands in the kit Mistral/Mixtral classes, Mixtral's experts as experts (never a dense MLP), or
the file is refused before anything is read. Metadata the kit cannot map exactly (another architecture, RoPE scaling,
partial rotary, unknown keys) is refused too, and every hyperparameter is checked as those of params.json and
config.json are (`hyperparameters`), the special token ids against the vocabulary. Tensors are read when transformers
asks for them: F32/F16/BF16 straight from the memory map, quantized types (Q8_0, the k-quants, ...) dequantized with
the `gguf` package, one tensor (one expert) at a time. The tokenizer inside a file is `gguf_vocabulary`'s.

Writing (`write_gguf`, behind `convert_checkpoint(src, "model.gguf", to="gguf")`) uses the `gguf` package's writer:
every hyperparameter llama.cpp requires, the SentencePiece vocabulary with scores and token types, BOS/EOS/UNK (and
PAD when the checkpoint has one), the kit's chat template, and the weights in F32, F16, BF16 or Q8_0 (norms and the
MoE router stay F32, as llama.cpp's own converter keeps them), written one tensor at a time.

`METADATA` is the one map of `llama.*` keys: the reader, the writer and the check for unknown keys all follow it.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..hub import hub_kwargs
from ..tokenizers.loading import load_tokenizer
from . import names
from .checkpoint import Checkpoint
from .errors import GGUFError
from .gguf_container import ARRAY, INTEGER, STRING, GGUFContainer, kind_text, read_gguf_container, value_kind
from .gguf_vocabulary import (
    VOCABULARY_KEYS,
    add_space_prefix,
    gguf_vocabulary,
    tokenizer_from_gguf_fields,
    vocabulary_version,
)
from .hyperparameters import DEFAULT_ROPE_THETA, SIZE, WINDOW, Spelling, bounds, check_values, head_dim, yarn_params
from .tensors import LazyTensor

GGUF_ARCHITECTURE = "llama"  # the architecture llama.cpp files Mistral and Mixtral under
# llama.cpp's architecture for Ministral 3 and the text models of Mistral Small 3.x / Devstral releases: llama's
# layout and keys, plus YaRN and llama 4's query scaling (`attention.temperature_scale`).
YARN_ARCHITECTURE = "mistral3"
GGUF_ARCHITECTURES = (GGUF_ARCHITECTURE, YARN_ARCHITECTURE)
# llama.cpp architectures of the family the kit does not load, and why (the error names the route).
_REFUSED_ARCHITECTURES = {
    "mistral4": "Mistral Small 4 (multi-head latent attention, llama.cpp splits its kv_b projection)",
    "deepseek2": "a multi-head latent attention model (llama.cpp files Mistral Large 3 native checkpoints so)",
}
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")


# --- the metadata key map -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetadataKey:
    """One `llama.*` metadata key. A key holding a config field is written (as `value_type`) and read into it; a
    second key of the same field must agree with the first (else `refusal`). A key without a field is only read: the
    kit maps the file exactly when its value is one of `accepts` (any value when empty). Read, a value may be stored as
    any GGUF type of `value_type`'s kind (an integer key as any integer type), or as one value per layer (an array of
    `block_count` integers) where `per_layer`, as llama.cpp reads it."""

    key: str
    value_type: str  # gguf.GGUFValueType's name
    field: str | None = None
    required: bool = False  # llama.cpp cannot load a file without it
    accepts: tuple[Any, ...] = ()
    refusal: str = ""
    per_layer: bool = False
    # Read into the YaRN rope parameters under YARN_ARCHITECTURE (where `accepts` does not apply); a key of that
    # architecture only when `yarn_only`.
    yarn: bool = False
    yarn_only: bool = False


METADATA: tuple[MetadataKey, ...] = (
    MetadataKey("vocab_size", "UINT32", "vocab_size"),
    MetadataKey("context_length", "UINT32", "max_position_embeddings", required=True),
    MetadataKey("embedding_length", "UINT32", "hidden_size", required=True),
    MetadataKey("block_count", "UINT32", "num_hidden_layers", required=True),
    MetadataKey("feed_forward_length", "UINT32", "intermediate_size", required=True, per_layer=True),
    MetadataKey("attention.head_count", "UINT32", "num_attention_heads", required=True, per_layer=True),
    MetadataKey("attention.head_count_kv", "UINT32", "num_key_value_heads", per_layer=True),
    MetadataKey("attention.key_length", "UINT32", "head_dim"),
    MetadataKey(
        "attention.value_length",
        "UINT32",
        "head_dim",
        refusal="key and value head sizes differ; Mistral models use one head size.",
    ),
    MetadataKey(
        "rope.dimension_count",
        "UINT32",
        "head_dim",
        refusal="partial rotary embeddings (rope.dimension_count < head size) are not Mistral's.",
    ),
    MetadataKey("rope.freq_base", "FLOAT32", "rope_theta"),
    MetadataKey("attention.layer_norm_rms_epsilon", "FLOAT32", "rms_norm_eps", required=True),
    # llama.cpp's llama architecture ignores it; the kit reads it back.
    MetadataKey("attention.sliding_window", "UINT32", "sliding_window"),
    MetadataKey("expert_count", "UINT32", "num_local_experts"),
    MetadataKey("expert_used_count", "UINT32", "num_experts_per_tok"),
    MetadataKey(
        "rope.scaling.type",
        "STRING",
        accepts=("none", ""),
        refusal="RoPE scaling ({value}) has no Mistral equivalent under llama.cpp's llama architecture.",
        yarn=True,
    ),
    MetadataKey(
        "rope.scaling.factor",
        "FLOAT32",
        accepts=(1.0,),
        refusal="RoPE scaling (factor {value}) has no Mistral equivalent under llama.cpp's llama architecture.",
        yarn=True,
    ),
    # YaRN and llama 4's query scaling (mistral3 only).
    MetadataKey("rope.scaling.original_context_length", "UINT32", yarn=True, yarn_only=True),
    MetadataKey("rope.scaling.yarn_beta_fast", "FLOAT32", yarn=True, yarn_only=True),
    MetadataKey("rope.scaling.yarn_beta_slow", "FLOAT32", yarn=True, yarn_only=True),
    MetadataKey("rope.scaling.yarn_log_multiplier", "FLOAT32", yarn=True, yarn_only=True),
    MetadataKey("attention.temperature_scale", "FLOAT32", yarn=True, yarn_only=True),
    MetadataKey(
        "expert_gating_func",
        "UINT32",
        accepts=(1,),
        refusal="the experts' gating function is not Mixtral's softmax.",
    ),
    MetadataKey(
        "expert_weights_norm",
        "BOOL",
        accepts=(True,),
        refusal="Mixtral renormalizes the selected experts' weights; this file does not.",
    ),
    # Old llama.cpp files: "Meta AI original pth", i.e. the native rotary layout, which every file has.
    MetadataKey("tensor_data_layout", "STRING"),
)


def metadata_keys(architecture: str) -> list[MetadataKey]:
    """The `METADATA` rows of a GGUF architecture (`GGUF_ARCHITECTURES`)."""
    return [row for row in METADATA if architecture == YARN_ARCHITECTURE or not row.yarn_only]


@functools.cache
def _field_keys(architecture: str) -> dict[str, str]:
    """config field -> the first metadata key holding it, e.g. "llama.block_count"."""
    keys: dict[str, str] = {}
    for row in METADATA:
        if row.field is not None:
            keys.setdefault(row.field, f"{architecture}.{row.key}")
    return keys


@functools.cache
def gguf_spelling(architecture: str) -> Spelling:
    """How errors name a hyperparameter: by its key, as a value the metadata gives."""
    return Spelling(
        {field: (key,) for field, key in _field_keys(architecture).items()},
        lambda name, kind: f"the metadata gives impossible {'sizes' if kind in (SIZE, WINDOW) else 'values'}: {name!r}",
    )


GGUF = gguf_spelling(GGUF_ARCHITECTURE)


# --- reading ------------------------------------------------------------------------------------------------------


def is_gguf_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a file starting with the GGUF magic."""
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == b"GGUF"
    except OSError:
        return False


def gguf_checkpoint_file(path: str | os.PathLike | None, kwargs: Mapping[str, Any]) -> Path | None:
    """The GGUF file a `from_pretrained(path, gguf_file=...)` call names (downloaded when it is on the Hub), or `path`
    itself when it is a GGUF file; None for any other checkpoint."""
    gguf_file = kwargs.get("gguf_file")
    if gguf_file is None:
        return Path(path) if path is not None and Path(path).is_file() and is_gguf_file(path) else None
    local = Path(path or ".") / kwargs.get("subfolder", "") / gguf_file
    if local.is_file():
        return local
    if os.path.isfile(gguf_file):  # an absolute path, or one relative to the working directory
        return Path(gguf_file)
    if path is None or Path(path).is_dir():
        raise FileNotFoundError(f"{path or 'The working directory'} has no GGUF file {gguf_file}.")
    from transformers.utils import cached_file

    return Path(cached_file(path, gguf_file, **hub_kwargs(kwargs)))


def gguf_reader(path: str | os.PathLike) -> GGUFContainer:
    """A GGUF file's metadata, the type each value is stored as and its tensor index (`gguf_container`), checked: the
    header bounded, every value the kit reads of its type (`check_metadata_types`), every tensor inside the file. The
    last few files' are kept per process; a file changed on disk is read again."""
    return _parsed(Path(path))


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A GGUF file's metadata (key -> value, arrays as lists), without reading any tensor."""
    return dict(_parsed(Path(path)).fields)


def _parsed(path: Path) -> GGUFContainer:
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
    if not is_gguf_file(path):
        raise GGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic).")
    status = path.stat()
    return _cached_parse(str(path.resolve()), status.st_mtime_ns, status.st_size, path)


@functools.lru_cache(maxsize=8)
def _cached_parse(name: str, mtime_ns: int, size: int, path: Path) -> GGUFContainer:
    """`path` (whose resolved name is `name`) read and checked; errors name it as the caller does."""
    container = read_gguf_container(path)
    check_metadata_types(container, path)
    return container


@functools.cache
def _expected_types(architecture: str) -> dict[str, tuple[str, str | None, bool, str]]:
    """key -> (kind, array items' kind, may be per layer, what it must be) for every metadata key the kit reads."""
    prefix = f"{architecture}."
    expected: dict[str, tuple[str, str | None, bool, str]] = {"general.architecture": (STRING, None, False, "a string")}
    for key, (kind, items) in VOCABULARY_KEYS.items():
        expected[key] = (kind, items, False, kind_text(kind, items))
    for row in metadata_keys(architecture):
        kind = value_kind(row.value_type)
        text = f"{kind_text(kind)} {bounds(row.field)}".strip() if row.field else kind_text(kind)
        if row.per_layer:
            text += f", or one per layer (an array of {prefix}block_count integers)"
        expected[prefix + row.key] = (kind, None, row.per_layer, text)
    return expected


def check_metadata_types(container: GGUFContainer, source: Any) -> None:
    """Refuse a file in which a metadata value the kit reads is stored as a GGUF type of another kind (a float or a
    string where an integer belongs, an array where one value does), naming the key, what it holds and what it must."""
    architecture = container.fields.get("general.architecture")
    architecture = architecture if architecture in GGUF_ARCHITECTURES else GGUF_ARCHITECTURE
    for key, (kind, items, per_layer, text) in _expected_types(architecture).items():
        stored = container.types.get(key)
        if stored is None or (stored.kind == kind and stored.items == items):
            continue
        if per_layer and stored.kind == ARRAY and stored.items == INTEGER:
            continue
        raise GGUFError(f"{source}: {key} is stored as {stored.describe(container.fields[key])}; it must be {text}.")


def _float32(value: float) -> float:
    """The shortest decimal that reads back as `value`'s float32 (GGUF stores `1e-5` as 9.99999974e-06)."""
    return float(str(np.float32(value)))


def config_dict_from_gguf(fields: Mapping[str, Any], tensors: Mapping[str, Any], source: Any) -> dict[str, Any]:
    """Translate GGUF metadata (and the tensor names, for tied embeddings) into a transformers config dict
    (`model_type` mistral or mixtral from llama.cpp's llama architecture; ministral3, or mistral with YaRN or none,
    from its mistral3 architecture), refusing anything the kit cannot map exactly."""
    from ..architectures import architecture as family_row

    architecture = fields.get("general.architecture")
    if architecture in _REFUSED_ARCHITECTURES:
        raise GGUFError(
            f"{source} holds llama.cpp's {architecture!r} architecture, {_REFUSED_ARCHITECTURES[architecture]}; the "
            "kit does not load it from GGUF. Load the model's Hugging Face release (config.json) with the kit instead."
        )
    if architecture not in GGUF_ARCHITECTURES:
        raise GGUFError(
            f"{source} holds a {architecture!r} model; hf-mistral-kit reads Mistral-family GGUF files (llama.cpp "
            f"architectures {', '.join(map(repr, GGUF_ARCHITECTURES))}). Load other models with transformers' own GGUF "
            "support (transformers.AutoModelForCausalLM.from_pretrained(..., gguf_file=...))."
        )
    prefix = f"{architecture}."
    known = {row.key for row in metadata_keys(architecture)}
    unknown = sorted(k for k in fields if k.startswith(prefix) and k[len(prefix) :] not in known)
    if unknown:
        raise GGUFError(
            f"{source}: metadata {', '.join(unknown)} describes something a Mistral-family model does not have; the "
            "kit refuses the file rather than load it differently from llama.cpp."
        )
    try:
        values = _metadata_values(fields, tensors, source, architecture)
    except (TypeError, ValueError) as error:
        if isinstance(error, GGUFError):
            raise
        raise GGUFError(f"{source}: malformed metadata ({error}).") from None
    if not values.get("sliding_window"):  # 0: no window
        values.pop("sliding_window", None)
    experts = bool(values.get("num_local_experts"))
    if not experts:
        values.pop("num_local_experts", None)
        values.pop("num_experts_per_tok", None)
    spelling = gguf_spelling(architecture)
    entries = [(field, spelling.name(field), value) for field, value in values.items()]
    check_values(entries, source, GGUFError, spelling, experts=experts)
    rope = _rope_parameters(fields, prefix, _float32(values["rope_theta"]), source)
    if experts and rope["rope_type"] != "default":
        raise GGUFError(f"{source}: experts with YaRN ({architecture}) are no Mistral model the kit knows.")
    model_type = "mixtral" if experts else "ministral3" if "llama_4_scaling_beta" in rope else "mistral"
    arch = family_row(model_type)
    config: dict[str, Any] = {
        "model_type": arch.model_type,
        "architectures": [arch.causal_lm],
        **{field: value for field, value in values.items() if field not in ("rope_theta", "rms_norm_eps")},
        "rms_norm_eps": _float32(values["rms_norm_eps"]),
        "rope_parameters": rope,
        "sliding_window": values.get("sliding_window") or None,
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    vocab_size = values["vocab_size"]
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id"), ("unknown", "")):
        token = fields.get(f"tokenizer.ggml.{name}_token_id")
        if token is None:
            continue
        if not 0 <= token < vocab_size:
            raise GGUFError(
                f"{source}: tokenizer.ggml.{name}_token_id is {token}; a token id must be from 0 to {vocab_size - 1} "
                f"(the vocabulary has {vocab_size} tokens)."
            )
        if key:
            config[key] = token
    return config


def _metadata_values(
    fields: Mapping[str, Any], tensors: Mapping[str, Any], source: Any, architecture: str = GGUF_ARCHITECTURE
) -> dict[str, Any]:
    """The config fields the metadata holds (`METADATA`), with llama.cpp's defaults for the keys a file may omit."""
    prefix = f"{architecture}."
    keys = metadata_keys(architecture)

    def get(row: MetadataKey) -> Any:
        value = fields.get(prefix + row.key)
        if isinstance(value, list):  # one value per layer (`check_metadata_types` allows it where llama.cpp does)
            layers = fields.get(prefix + "block_count")
            if len(value) != layers:
                raise GGUFError(
                    f"{source}: {prefix + row.key} holds {len(value)} per-layer values, but {prefix}block_count is "
                    f"{layers}; llama.cpp refuses the file too."
                )
            if len(set(value)) != 1:
                raise GGUFError(f"{source}: per-layer {prefix + row.key} ({value[:4]}...) is not a Mistral layout.")
            value = value[0]
        return value

    values: dict[str, Any] = {}
    for row in keys:
        if row.yarn and architecture == YARN_ARCHITECTURE:
            continue  # read by `_rope_parameters`
        value = get(row)
        if value is None:
            if row.required:
                raise GGUFError(
                    f"{source}: metadata {prefix + row.key} is missing; llama.cpp cannot load the file either."
                )
            continue
        if row.field is None:
            if row.accepts and value not in row.accepts:
                raise GGUFError(f"{source}: {row.refusal.format(value=value)}")
        elif row.field not in values:
            values[row.field] = value
    heads = values["num_attention_heads"]
    values.setdefault("num_key_value_heads", heads)
    if isinstance(heads, int) and heads > 0:  # else the checks say what is wrong with it
        values["head_dim"] = head_dim(values)
    values.setdefault("rope_theta", DEFAULT_ROPE_THETA)
    vocab, embedding = fields.get("tokenizer.ggml.tokens"), tensors.get("token_embd.weight")
    values.setdefault("vocab_size", len(vocab) if vocab else (int(embedding.shape[-1]) if embedding else 0))
    for row in keys:  # a second key of a field: the same value or a refusal
        if row.field is not None and _field_keys(architecture)[row.field] != prefix + row.key:
            value = get(row)
            if value is not None and row.field in values and value != values[row.field]:
                raise GGUFError(f"{source}: {row.refusal}")
    return values


def _rope_parameters(fields: Mapping[str, Any], prefix: str, theta: float, source: Any) -> dict[str, Any]:
    """transformers' `rope_parameters` from the metadata: default RoPE, or (mistral3 only) YaRN without attention
    magnitude correction (`yarn_log_multiplier` 1, transformers' mscale = mscale_all_dim = 1, as llama.cpp's converter
    writes Ministral 3), with llama 4's query scaling where `attention.temperature_scale` is given."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    if prefix != f"{YARN_ARCHITECTURE}.":
        return rope  # the llama rows' `accepts` already refused any scaling

    def number(key: str, default: float | None = None) -> float | None:
        value = fields.get(prefix + key, default)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise GGUFError(f"{source}: {prefix + key} must be a finite number above 0, got {value!r}.")
        return None if value is None else _float32(value)

    kind = fields.get(prefix + "rope.scaling.type")
    scale = number("attention.temperature_scale")
    yarn_keys = [row.key for row in METADATA if row.yarn_only and row.key != "attention.temperature_scale"]
    if kind in (None, "", "none"):
        present = [prefix + key for key in [*yarn_keys, "rope.scaling.factor"] if prefix + key in fields]
        if present or scale is not None:
            raise GGUFError(
                f"{source}: {', '.join(present) or prefix + 'attention.temperature_scale'} without YaRN "
                f"({prefix}rope.scaling.type) is no Mistral model the kit knows."
            )
        return rope
    if kind != "yarn":
        raise GGUFError(f"{source}: RoPE scaling {kind!r} has no Mistral equivalent (Ministral 3 uses yarn).")
    factor, original = number("rope.scaling.factor"), fields.get(prefix + "rope.scaling.original_context_length")
    if factor is None or original is None:
        raise GGUFError(
            f"{source}: YaRN needs {prefix}rope.scaling.factor and {prefix}rope.scaling.original_context_length."
        )
    if not isinstance(original, int) or original < 1:
        raise GGUFError(f"{source}: {prefix}rope.scaling.original_context_length must be a positive integer.")
    log_multiplier = fields.get(prefix + "rope.scaling.yarn_log_multiplier")
    if log_multiplier != 1.0:
        raise GGUFError(
            f"{source}: {prefix}rope.scaling.yarn_log_multiplier is {log_multiplier!r}; only 1.0 (no attention "
            "magnitude correction: transformers' mscale = mscale_all_dim = 1, as Ministral 3 has) maps exactly."
        )
    rope.update(
        rope_type="yarn",
        factor=factor,
        original_max_position_embeddings=original,
        beta_fast=number("rope.scaling.yarn_beta_fast", 32.0),  # llama.cpp's defaults, as transformers'
        beta_slow=number("rope.scaling.yarn_beta_slow", 1.0),
        mscale=1.0,
        mscale_all_dim=1.0,
    )
    if scale is not None:
        rope["llama_4_scaling_beta"] = scale
    return rope


class _GGUFData:
    """`[index]` of a GGUF tensor as a torch tensor: F32/F16/BF16 as views of the (copy-on-write) memory map,
    quantized types dequantized by the `gguf` package. `index` selects along the numpy (row-major) shape, e.g. one
    expert of a stacked experts tensor."""

    def __init__(self, tensor: Any):
        self.tensor = tensor

    def __getitem__(self, index: Any) -> torch.Tensor:
        from gguf import GGMLQuantizationType as Q
        from gguf import dequantize

        data, kind = self.tensor.data[index], self.tensor.tensor_type
        if kind in (Q.F32, Q.F16):
            return torch.from_numpy(data)
        if kind == Q.BF16:
            return torch.from_numpy(data.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(dequantize(data, kind))


def _torch_dtype(kind: Any) -> torch.dtype:
    from gguf import GGMLQuantizationType as Q

    return {Q.F16: torch.float16, Q.BF16: torch.bfloat16}.get(kind, torch.float32)


def _check_readable(tensors: Mapping[str, Any], source: Any) -> None:
    """Refuse tensor types the `gguf` package cannot dequantize, before anything is loaded."""
    from gguf import GGML_QUANT_SIZES, dequantize
    from gguf import GGMLQuantizationType as Q

    for kind in {tensor.tensor_type for tensor in tensors.values()}:
        if kind in (Q.F32, Q.F16, Q.BF16):
            continue
        try:
            dequantize(np.zeros((1, GGML_QUANT_SIZES[kind][1]), dtype=np.uint8), kind)
        except (NotImplementedError, KeyError, ValueError) as error:
            names = [name for name, tensor in tensors.items() if tensor.tensor_type == kind]
            raise GGUFError(
                f"{source}: tensor type {kind.name} (e.g. {names[0]!r}) cannot be dequantized by the installed gguf "
                f"package ({error}); upgrade it (pip install -U gguf) or re-quantize the file to a common type."
            ) from error


def _keeps_f32(name: str) -> bool:
    """Whether llama.cpp keeps a tensor in float32 whatever the file type (norms and the MoE router)."""
    found = names.find(name, "gguf") or names.find(name, "gguf_stacked")
    return found is not None and found.row.role in names.F32_ROLES


def native_tensors_from_gguf(tensors: Mapping[str, Any], config: Mapping[str, Any], source: Any):
    """GGUF tensors (`ReaderTensor`s by name) as native-named `LazyTensor`s, stacked experts split per expert; and a
    function spelling a native name the way the file does (for error messages)."""
    from gguf import GGMLQuantizationType as Q

    native: dict[str, LazyTensor] = {}
    spelled: dict[str, str] = {}
    unknown = []
    for name, tensor in tensors.items():
        data = _GGUFData(tensor)
        dtype = _torch_dtype(tensor.tensor_type)
        shape = tuple(reversed(tensor.shape))
        stacked = names.find(name, "gguf_stacked")
        if stacked is not None:
            experts = config.get("num_local_experts")
            if experts is None or len(shape) != 3 or shape[0] != experts:
                raise GGUFError(
                    f"{source}: stacked experts {name!r} have shape {list(shape)}, but the metadata says "
                    f"{experts or 'no'} experts."
                )
            for expert in range(experts):
                key = names.Match(stacked.row, stacked.layer, expert).name("native")
                native[key] = LazyTensor(data, dtype, shape[1:], expert)
                spelled[key] = f"{name}[{expert}]"
            continue
        key = names.rename(name, "gguf", "native")
        if key is None:
            unknown.append(name)
            continue
        # Float tensors are stored raw: wq/wk rows can then be read straight into their rotate-half places.
        raw = tensor.tensor_type in (Q.F32, Q.F16, Q.BF16)
        native[key] = LazyTensor(data, dtype, shape, location=(Path(source), tensor.data_offset) if raw else None)
        spelled[key] = name
    if unknown:
        raise GGUFError(
            f"{source}: tensor(s) {', '.join(map(repr, unknown[:5]))} have no place in a Mistral/Mixtral model "
            "(e.g. rope_freqs of Llama 3, biases, vision towers); the kit does not load the file partially."
        )
    _check_readable(tensors, source)

    def display(key: str) -> str:
        return spelled.get(key) or names.rename(key, "native", "gguf") or key

    return native, display


class GGUFCheckpoint(Checkpoint):
    """A validated Mistral/Mixtral GGUF file: its config, its weights under transformers names (read lazily) and its
    tokenizer. Opening it reads the metadata and tensor index only and checks every tensor against the metadata."""

    error = GGUFError
    described_by = "the GGUF metadata"

    def __init__(self, path: str | os.PathLike):
        self.path = self.source = Path(path)
        container = _parsed(self.path)
        self.fields = dict(container.fields)
        tensors = {tensor.name: tensor for tensor in container.tensors}
        self.config = config_dict_from_gguf(self.fields, tensors, self.path)
        self.native_tensors, display = native_tensors_from_gguf(tensors, self.config, self.path)
        self.config["dtype"] = str(self._dtype(tensors)).removeprefix("torch.")
        self.check_tensors(display, described_by="its metadata")

    @staticmethod
    def _dtype(tensors: Mapping[str, Any]) -> torch.dtype:
        """The dtype the weights come out in: the file's float type, float32 for quantized files."""
        kinds = {_torch_dtype(t.tensor_type) for name, t in tensors.items() if not _keeps_f32(name)}
        return kinds.pop() if len(kinds) == 1 else torch.float32

    def apply_generation_config(self, model: Any) -> None:
        """Generation defaults from the file: BOS/EOS/PAD ids."""
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if key in self.config:
                setattr(model.generation_config, key, self.config[key])

    def tokenizer(self):
        """The kit tokenizer of this file's vocabulary (see `load_gguf_tokenizer`)."""
        return tokenizer_from_gguf_fields(self.fields, self.path)


def config_dict_from_gguf_file(path: str | os.PathLike) -> dict[str, Any]:
    """The transformers config dict of a GGUF file (metadata and tensor index only are read)."""
    return GGUFCheckpoint(path).config


def load_gguf_tokenizer(path: str | os.PathLike, **kwargs: Any):
    """The exact kit tokenizer (mistral-common's ids, the matching chat template) of a Mistral GGUF file; keyword
    arguments are tokenizer arguments, as for `load_tokenizer`."""
    return tokenizer_from_gguf_fields(read_gguf_metadata(path), Path(path), **kwargs)


# --- writing ------------------------------------------------------------------------------------------------------


def _quantize(tensor: torch.Tensor, qtype: Any) -> tuple[np.ndarray, Any]:
    """`tensor` as the numpy array GGUFWriter stores for `qtype` (falling back to F16 where Q8_0 cannot apply)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import QuantError, quantize

    if qtype == Q.F32:
        return tensor.to(torch.float32).contiguous().numpy(), qtype
    if qtype == Q.F16:
        return tensor.to(torch.float16).contiguous().numpy(), qtype
    if qtype == Q.BF16:  # torch rounds to nearest even, as gguf's BF16 quantizer does; raw bytes for the writer
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8), qtype
    try:
        return quantize(tensor.to(torch.float32).contiguous().numpy(), qtype), qtype
    except QuantError:
        return tensor.to(torch.float16).contiguous().numpy(), Q.F16


def _planned_type(name: str, shape: tuple[int, ...], qtype: Any) -> Any:
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if len(shape) <= 1 or _keeps_f32(name):
        return Q.F32
    if qtype not in (Q.F32, Q.F16, Q.BF16) and shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        return Q.F16  # rows that are not a whole number of blocks (llama.cpp's converter falls back the same way)
    return qtype


def _nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def gguf_tensor_plan(native: Mapping[str, LazyTensor]) -> list[tuple[str, tuple[int, ...], Callable]]:
    """(GGUF name, shape, read) for every tensor of the file, experts stacked per layer, in llama.cpp's order."""
    plan: dict[str, tuple[tuple[int, ...], Callable]] = {}
    experts: dict[tuple[int, names.Tensor], dict[int, LazyTensor]] = {}
    for key, tensor in native.items():
        found = names.find(key, "native")
        if found is None:
            raise GGUFError(f"Weight {key!r} has no GGUF name.")
        if found.row.gguf_stacked is not None:
            experts.setdefault((found.layer, found.row), {})[found.expert] = tensor
            continue
        plan[found.name("gguf")] = (tensor.shape, tensor.read)
    for (layer, row), by_expert in experts.items():
        parts = [by_expert[e] for e in range(len(by_expert))]

        def read(parts: list[LazyTensor] = parts) -> torch.Tensor:
            return torch.stack([p.read() for p in parts])

        plan[names.Match(row, layer).name("gguf_stacked")] = ((len(parts), *parts[0].shape), read)

    def order(name: str) -> tuple:
        if not name.startswith("blk."):
            return (0 if name == "token_embd.weight" else 2, name)
        layer, rest = name[4:].split(".", 1)
        return (1, int(layer), rest)

    return [(name, *plan[name]) for name in sorted(plan, key=order)]


def gguf_architecture(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The llama.cpp architecture a config dict is written as, and its RoPE metadata keys beyond llama's: `llama` for
    mistral and mixtral with default RoPE, `mistral3` (as llama.cpp's converter writes Ministral 3) for YaRN and llama
    4's query scaling. Anything else raises a GGUFError naming the route."""
    model_type = config.get("model_type")
    route = "keep the Hugging Face or native checkpoint, or convert it with llama.cpp's convert_hf_to_gguf.py"
    if model_type not in ("mistral", "mixtral", "ministral", "ministral3"):
        raise GGUFError(
            f"The kit writes GGUF files of mistral, mixtral, ministral (one window for every layer) and ministral3 "
            f"text models, not {model_type!r}; {route}."
        )
    layer_types = config.get("layer_types") or ()
    if config.get("sliding_window") is not None and "full_attention" in layer_types:
        raise GGUFError(
            f"Per-layer sliding windows ({model_type}: {list(layer_types)[:4]}...) have no llama.cpp llama or mistral3 "
            "equivalent; keep the Hugging Face checkpoint, or convert it to Mistral's native layout (to='native')."
        )
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    beta = rope.get("llama_4_scaling_beta") if model_type == "ministral3" else None
    if (
        rope_type == "default"
        and set(rope) <= {"rope_type", "type", "rope_theta", "llama_4_scaling_beta"}
        and beta is None
    ):
        if model_type == "ministral3":
            raise GGUFError(
                f"A ministral3 config without YaRN and llama_4_scaling_beta has no GGUF equivalent; {route}."
            )
        return GGUF_ARCHITECTURE, {}
    if rope_type != "yarn" or model_type == "mixtral":
        raise GGUFError(f"rope_parameters {dict(rope)} ({model_type}) have no exact GGUF equivalent; {route}.")
    yarn = yarn_params(rope, GGUFError)
    metadata = {
        "rope.scaling.type": "yarn",
        "rope.scaling.factor": yarn["factor"],
        "rope.scaling.original_context_length": yarn["original_max_position_embeddings"],
        "rope.scaling.yarn_beta_fast": yarn["beta"],
        "rope.scaling.yarn_beta_slow": yarn["alpha"],
        "rope.scaling.yarn_log_multiplier": 1.0,  # no attention magnitude correction (`yarn_params` checked it)
    }
    if beta is not None:
        metadata["attention.temperature_scale"] = beta
    elif model_type == "ministral3":
        raise GGUFError(f"A ministral3 config without llama_4_scaling_beta has no GGUF equivalent; {route}.")
    return YARN_ARCHITECTURE, metadata


def write_gguf(
    native: Mapping[str, LazyTensor],
    config: Any,
    src: Path,
    dst: Path,
    dtype: Literal["f32", "f16", "bf16", "q8_0"] | None = None,
    name: str | None = None,
    label: str | None = None,
) -> None:
    """Write a llama.cpp GGUF of a Mistral/Mixtral causal LM: native-named tensors (validated, experts per expert),
    its transformers config dict, and the tokenizer of `src`. `dtype` None keeps the weights' own float type."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    if dtype is None:
        dtype = {torch.float16: "f16", torch.bfloat16: "bf16"}.get(next(iter(native.values())).dtype, "f32")
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}.")
    qtype = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[dtype]
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    architecture, rope_metadata = gguf_architecture(config)
    rope = config.get("rope_parameters") or {}
    vocabulary = gguf_vocabulary(src, config["vocab_size"])
    version = vocabulary_version(vocabulary)
    chat_template = load_tokenizer(src).chat_template

    context = config["max_position_embeddings"]
    window = config.get("sliding_window")
    if window is not None and window < context:
        message = (
            f"{src}: sliding_window {window} is shorter than the context ({context}), and llama.cpp's llama "
            f"architecture attends to the whole context. The GGUF declares a context length of {window}, within which "
            "both attend alike; prompts longer than that will differ from the original model."
        )
        warnings.warn(message, stacklevel=3)
        context = window

    plan = gguf_tensor_plan(native)
    writer = gguf.GGUFWriter(path=None, arch=architecture)
    writer.add_name(name or src.name)
    writer.add_file_type(file_type)
    if qtype not in (Q.F32, Q.F16, Q.BF16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    values = {
        **config,
        "head_dim": head_dim(config),
        "rope_theta": rope.get("rope_theta", DEFAULT_ROPE_THETA),
        "max_position_embeddings": context,
    }
    for row in METADATA:
        if row.field is not None and values.get(row.field) is not None:
            value_type = gguf.GGUFValueType[row.value_type]
            writer.add_key_value(f"{architecture}.{row.key}", values[row.field], value_type)
    for key, value in rope_metadata.items():
        row = next(row for row in METADATA if row.key == key)
        writer.add_key_value(f"{architecture}.{key}", value, gguf.GGUFValueType[row.value_type])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_scores(vocabulary["scores"])
    writer.add_token_types(vocabulary["types"])
    writer.add_bos_token_id(vocabulary["bos"])
    writer.add_eos_token_id(vocabulary["eos"])
    writer.add_unk_token_id(vocabulary["unk"])
    if config.get("pad_token_id") is not None and config["pad_token_id"] != vocabulary["eos"]:
        writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(add_space_prefix(version))
    writer.add_chat_template(chat_template)

    planned = []
    for tensor_name, shape, read in plan:
        kind = _planned_type(tensor_name, shape, qtype)
        writer.add_tensor_info(tensor_name, shape, np.dtype(np.float32), _nbytes(shape, kind), raw_dtype=kind)
        planned.append((tensor_name, shape, read, kind))

    from transformers.utils.logging import tqdm

    total = sum(_nbytes(shape, kind) for _, shape, _, kind in planned)
    writer.write_header_to_file(path=dst)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"Writing {label or dst.name}") as progress:
        for tensor_name, shape, read, kind in planned:
            tensor = read()
            if tuple(tensor.shape) != shape:
                raise GGUFError(f"{tensor_name}: read shape {list(tensor.shape)}, planned {list(shape)}.")
            data, written = _quantize(tensor, kind)
            if written != kind:
                raise GGUFError(f"{tensor_name}: could not be stored as {kind.name}.")
            writer.write_tensor_data(data)
            progress.update(data.nbytes)
    writer.close()
