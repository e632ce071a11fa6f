"""GGUF, llama.cpp's checkpoint format, in and out for Mistral and Mixtral.

Reading (`GGUFCheckpoint`, used by the kit's `from_pretrained(..., gguf_file=...)`): llama.cpp files Mistral and Mixtral
under its `llama` architecture, with Mistral's native tensor layout (`wq`/`wk` rows in interleaved rotary order) under
its own names. Each GGUF name maps to a native name (`_GGUF_TO_NATIVE`), and from there the native loader's tables
and checks take over: every weight lands in the kit Mistral/Mixtral classes, Mixtral's experts as experts (never a
dense MLP), or the file is refused before anything is read. Metadata the kit cannot map exactly (another
architecture, RoPE scaling, partial rotary, unknown keys) is refused too. Tensors are read when transformers asks for
them: F32/F16/BF16 straight from the memory map, quantized types (Q8_0, the k-quants, ...) dequantized with the
`gguf` package, one tensor (one expert) at a time.

The tokenizer inside a GGUF is Mistral's SentencePiece model written out as a vocabulary (pieces, scores, types and
special ids). `GGUFCheckpoint.tokenizer()` rebuilds the SentencePiece model from it, checks that it is one of
Mistral's tokenizers (v1, v2 or v3, piece for piece), stores it as `tokenizer.model.vN` in the kit's cache and loads
it with `hf_mistral_kit.load_tokenizer`, which gives mistral-common's ids and the matching chat template.

Writing (`write_gguf`, behind `convert_checkpoint(src, "model.gguf", to="gguf")`) uses the `gguf` package's writer:
every hyperparameter llama.cpp requires, the SentencePiece vocabulary with scores and token types, BOS/EOS/UNK (and
PAD when the checkpoint has one), the kit's chat template, and the weights in F32, F16, BF16 or Q8_0 (norms and the
MoE router stay F32, as llama.cpp's own converter keeps them), written one tensor at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .native import (
    TOKENIZER_FILE_PATTERN,
    LazyTensor,
    NativeCheckpointError,
    check_loading_info,
    hf_tensors_from_native,
    rename_key,
)

logger = logging.getLogger(__name__)

GGUF_ARCHITECTURE = "llama"  # the architecture llama.cpp files Mistral and Mixtral under
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
CACHE_ENV = "HF_MISTRAL_KIT_CACHE"


class GGUFError(NativeCheckpointError):
    """A GGUF file the kit cannot load or write exactly (the message says why and what to do)."""


# --- tensor names -------------------------------------------------------------------------------------------------

_B = r"blk\.(\d+)\."
# GGUF name -> native name. The native loader maps native names to transformers names and checks the shapes.
_GGUF_TO_NATIVE = [
    (re.compile(r"token_embd\.weight"), "tok_embeddings.weight"),
    (re.compile(r"output_norm\.weight"), "norm.weight"),
    (re.compile(r"output\.weight"), "output.weight"),
    (re.compile(_B + r"attn_norm\.weight"), r"layers.\1.attention_norm.weight"),
    (re.compile(_B + r"attn_q\.weight"), r"layers.\1.attention.wq.weight"),
    (re.compile(_B + r"attn_k\.weight"), r"layers.\1.attention.wk.weight"),
    (re.compile(_B + r"attn_v\.weight"), r"layers.\1.attention.wv.weight"),
    (re.compile(_B + r"attn_output\.weight"), r"layers.\1.attention.wo.weight"),
    (re.compile(_B + r"ffn_norm\.weight"), r"layers.\1.ffn_norm.weight"),
    (re.compile(_B + r"ffn_gate\.weight"), r"layers.\1.feed_forward.w1.weight"),
    (re.compile(_B + r"ffn_down\.weight"), r"layers.\1.feed_forward.w2.weight"),
    (re.compile(_B + r"ffn_up\.weight"), r"layers.\1.feed_forward.w3.weight"),
    (re.compile(_B + r"ffn_gate_inp\.weight"), r"layers.\1.feed_forward.gate.weight"),
    # llama.cpp's first Mixtral files held one tensor per expert.
    (re.compile(_B + r"ffn_gate\.(\d+)\.weight"), r"layers.\1.feed_forward.experts.\2.w1.weight"),
    (re.compile(_B + r"ffn_down\.(\d+)\.weight"), r"layers.\1.feed_forward.experts.\2.w2.weight"),
    (re.compile(_B + r"ffn_up\.(\d+)\.weight"), r"layers.\1.feed_forward.experts.\2.w3.weight"),
]
_L = r"layers\.(\d+)\."
_NATIVE_TO_GGUF = [
    (re.compile(r"tok_embeddings\.weight"), "token_embd.weight"),
    (re.compile(r"norm\.weight"), "output_norm.weight"),
    (re.compile(r"output\.weight"), "output.weight"),
    (re.compile(_L + r"attention_norm\.weight"), r"blk.\1.attn_norm.weight"),
    (re.compile(_L + r"attention\.wq\.weight"), r"blk.\1.attn_q.weight"),
    (re.compile(_L + r"attention\.wk\.weight"), r"blk.\1.attn_k.weight"),
    (re.compile(_L + r"attention\.wv\.weight"), r"blk.\1.attn_v.weight"),
    (re.compile(_L + r"attention\.wo\.weight"), r"blk.\1.attn_output.weight"),
    (re.compile(_L + r"ffn_norm\.weight"), r"blk.\1.ffn_norm.weight"),
    (re.compile(_L + r"feed_forward\.w1\.weight"), r"blk.\1.ffn_gate.weight"),
    (re.compile(_L + r"feed_forward\.w2\.weight"), r"blk.\1.ffn_down.weight"),
    (re.compile(_L + r"feed_forward\.w3\.weight"), r"blk.\1.ffn_up.weight"),
    (re.compile(_L + r"feed_forward\.gate\.weight"), r"blk.\1.ffn_gate_inp.weight"),
]
# Current llama.cpp files stack each layer's experts: [num_experts, rows, cols] per projection.
_STACKED_GGUF = re.compile(_B + r"ffn_(gate|down|up)_exps\.weight")
_STACKED_NATIVE = {"gate": "w1", "down": "w2", "up": "w3"}
_NATIVE_EXPERT = re.compile(_L + r"feed_forward\.experts\.(\d+)\.(w[123])\.weight")
_F32_ALWAYS = re.compile(r".*(_norm\.weight|ffn_gate_inp\.weight)")  # as llama.cpp's converter keeps them


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

    hub = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
    return Path(cached_file(path, gguf_file, **{name: kwargs[name] for name in hub if name in kwargs}))


def gguf_reader(path: str | os.PathLike):
    """The `gguf.GGUFReader` of a GGUF file, validated (magic, complete tensors). Parsing a 32k-token vocabulary
    takes a second or more, so the last few files' readers (and metadata) are kept per process; a file changed on
    disk is read again."""
    return _parsed(Path(path))[0]


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A GGUF file's metadata (key -> value, arrays as lists), without reading any tensor."""
    return dict(_parsed(Path(path))[1])


def _parsed(path: Path) -> tuple[Any, dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
    if not is_gguf_file(path):
        raise GGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic).")
    status = path.stat()
    return _cached_parse(str(path.resolve()), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _cached_parse(name: str, mtime_ns: int, size: int) -> tuple[Any, dict[str, Any]]:
    from gguf import GGUFReader

    path = Path(name)
    try:
        # Copy-on-write mapping: tensors are writable views of the file (torch wants that), the file never changes.
        reader = GGUFReader(path, mode="c")
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, OverflowError) as error:
        raise GGUFError(
            f"{path} is truncated or corrupted ({error}). Download it again (compare its size with the source's)."
        ) from error
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size or tensor.data.nbytes != tensor.n_bytes:
            raise GGUFError(f"{path} is truncated: tensor {tensor.name!r} ends past the end of the file.")
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return reader, fields


def _float32(value: float) -> float:
    """The shortest decimal that reads back as `value`'s float32 (GGUF stores `1e-5` as 9.99999974e-06)."""
    return float(str(np.float32(value)))


# `llama.*` keys the kit maps; any other one in a file could change the model in a way the kit does not reproduce.
_KNOWN_KEYS = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "vocab_size",
    "expert_count",
    "expert_used_count",
    "expert_gating_func",
    "expert_weights_norm",
    "tensor_data_layout",  # old llama.cpp files: "Meta AI original pth", i.e. the native rotary layout
}


def config_dict_from_gguf(fields: Mapping[str, Any], tensors: Mapping[str, Any], source: Any) -> dict[str, Any]:
    """Translate GGUF metadata (and the tensor names, for tied embeddings) into a transformers config dict
    (`model_type` `mistral` or `mixtral`), refusing anything the kit cannot map exactly."""
    architecture = fields.get("general.architecture")
    if architecture != GGUF_ARCHITECTURE:
        raise GGUFError(
            f"{source} holds a {architecture!r} model; hf-mistral-kit reads Mistral and Mixtral GGUF files "
            f"(llama.cpp architecture {GGUF_ARCHITECTURE!r}). Load other models with transformers' own GGUF support "
            "(transformers.AutoModelForCausalLM.from_pretrained(..., gguf_file=...))."
        )
    prefix = f"{GGUF_ARCHITECTURE}."
    unknown = sorted(k for k in fields if k.startswith(prefix) and k[len(prefix) :] not in _KNOWN_KEYS)
    if unknown:
        raise GGUFError(
            f"{source}: metadata {', '.join(unknown)} describes something a Mistral/Mixtral model does not have; the "
            "kit refuses the file rather than load it differently from llama.cpp."
        )

    def get(name: str, default: Any = ...) -> Any:
        value = fields.get(prefix + name, default)
        if value is ...:
            raise GGUFError(f"{source}: metadata {prefix + name} is missing; llama.cpp cannot load the file either.")
        if isinstance(value, list):
            if len(set(value)) != 1:
                raise GGUFError(f"{source}: per-layer {prefix + name} ({value[:4]}...) is not a Mistral layout.")
            value = value[0]
        return value

    try:
        config = _config_from_fields(fields, tensors, get, source)
    except (TypeError, ValueError, ZeroDivisionError) as error:
        if isinstance(error, GGUFError):
            raise
        raise GGUFError(f"{source}: malformed metadata ({error}).") from None
    sizes = ("hidden_size", "num_hidden_layers", "head_dim", "intermediate_size", "num_attention_heads")
    sizes += ("num_key_value_heads", "vocab_size", "max_position_embeddings")
    bad = [name for name in sizes if config[name] <= 0]
    if bad or config["num_attention_heads"] % config["num_key_value_heads"]:
        raise GGUFError(f"{source}: the metadata gives impossible sizes ({', '.join(bad) or 'head counts'}).")
    if config.get("num_experts_per_tok", 0) > config.get("num_local_experts", 0):
        raise GGUFError(f"{source}: more experts used per token than there are experts.")
    return config


def _config_from_fields(fields: Mapping[str, Any], tensors: Mapping[str, Any], get: Callable, source: Any) -> dict:
    prefix = f"{GGUF_ARCHITECTURE}."
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // max(heads, 1)))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise GGUFError(f"{source}: key and value head sizes differ; Mistral models use one head size.")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise GGUFError(f"{source}: partial rotary embeddings (rope.dimension_count < head size) are not Mistral's.")
    if get("rope.scaling.type", "none") not in ("none", "") or float(get("rope.scaling.factor", 1.0)) != 1.0:
        raise GGUFError(f"{source}: RoPE scaling ({get('rope.scaling.type', '?')}) has no Mistral equivalent.")
    if int(get("expert_gating_func", 1)) != 1:  # 1: softmax, Mixtral's router
        raise GGUFError(f"{source}: the experts' gating function is not Mixtral's softmax.")
    if not get("expert_weights_norm", True):
        raise GGUFError(f"{source}: Mixtral renormalizes the selected experts' weights; this file does not.")
    vocab = fields.get("tokenizer.ggml.tokens")
    embedding = tensors.get("token_embd.weight")
    vocab_size = int(get("vocab_size", len(vocab) if vocab else (embedding.shape[-1] if embedding else 0)))
    window = fields.get(prefix + "attention.sliding_window")
    config: dict[str, Any] = {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "head_dim": head_dim,
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "rms_norm_eps": _float32(get("attention.layer_norm_rms_epsilon")),
        "vocab_size": vocab_size,
        "rope_parameters": {"rope_type": "default", "rope_theta": _float32(get("rope.freq_base", 10_000.0))},
        "sliding_window": int(window) if window else None,
        "max_position_embeddings": int(get("context_length")),
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        if f"tokenizer.ggml.{name}_token_id" in fields:
            config[key] = int(fields[f"tokenizer.ggml.{name}_token_id"])
    experts = int(get("expert_count", 0))
    if experts:
        config.update(
            model_type="mixtral",
            architectures=["MixtralForCausalLM"],
            num_local_experts=experts,
            num_experts_per_tok=int(get("expert_used_count")),
        )
    return config


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
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        stacked = _STACKED_GGUF.fullmatch(name)
        if stacked is not None:
            layer, part = stacked.groups()
            experts = config.get("num_local_experts")
            if experts is None or len(shape) != 3 or shape[0] != experts:
                raise GGUFError(
                    f"{source}: stacked experts {name!r} have shape {list(shape)}, but the metadata says "
                    f"{experts or 'no'} experts."
                )
            for expert in range(experts):
                key = f"layers.{layer}.feed_forward.experts.{expert}.{_STACKED_NATIVE[part]}.weight"
                native[key] = LazyTensor(data, dtype, shape[1:], expert)
                spelled[key] = f"{name}[{expert}]"
            continue
        key = rename_key(name, _GGUF_TO_NATIVE)
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
        return spelled.get(key) or rename_key(key, _NATIVE_TO_GGUF) or key

    return native, display


class GGUFCheckpoint:
    """A validated Mistral/Mixtral GGUF file: its config, its weights under transformers names (read lazily) and its
    tokenizer. Opening it reads the metadata and tensor index only and checks every tensor against the metadata."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        reader, fields = _parsed(self.path)
        self.fields = dict(fields)
        tensors = {tensor.name: tensor for tensor in reader.tensors}
        self.config = config_dict_from_gguf(self.fields, tensors, self.path)
        self.native_tensors, display = native_tensors_from_gguf(tensors, self.config, self.path)
        self.config["dtype"] = str(self._dtype(tensors)).removeprefix("torch.")
        try:
            self._hf_tensors = hf_tensors_from_native(
                self.native_tensors, self.config, self.path, "its metadata", display=display
            )
        except NativeCheckpointError as error:
            raise GGUFError(str(error)) from None

    @staticmethod
    def _dtype(tensors: Mapping[str, Any]) -> torch.dtype:
        """The dtype the weights come out in: the file's float type, float32 for quantized files."""
        kinds = {_torch_dtype(t.tensor_type) for name, t in tensors.items() if not _F32_ALWAYS.fullmatch(name)}
        return kinds.pop() if len(kinds) == 1 else torch.float32

    def hf_state_dict(self) -> dict[str, LazyTensor]:
        """Weights under transformers names (Mixtral experts per expert, 4.x names), read when first indexed."""
        return dict(self._hf_tensors)

    def check_loading_info(self, loading_info: Mapping[str, Any], model: Any) -> None:
        check_loading_info(loading_info, model, self.path, "the GGUF metadata")

    def apply_generation_config(self, model: Any) -> None:
        """Generation defaults from the file: BOS/EOS/PAD ids."""
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if key in self.config:
                setattr(model.generation_config, key, self.config[key])

    def tokenizer(self):
        """The kit tokenizer of this file's vocabulary (see `load_gguf_tokenizer`)."""
        return tokenizer_from_gguf_fields(self.fields, self.path)

    def close(self) -> None:
        """Nothing to release: the memory map lives as long as tensors read from it."""

    def __enter__(self) -> GGUFCheckpoint:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def config_dict_from_gguf_file(path: str | os.PathLike) -> dict[str, Any]:
    """The transformers config dict of a GGUF file (metadata and tensor index only are read)."""
    return GGUFCheckpoint(path).config


# --- tokenizer ----------------------------------------------------------------------------------------------------

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _reference_vocabularies() -> dict[str, Any]:
    """Mistral's SentencePiece models shipped in mistral-common, by version."""
    from sentencepiece import sentencepiece_model_pb2

    from .tokenizer import reference_tokenizer_file

    return {
        version: sentencepiece_model_pb2.ModelProto.FromString(reference_tokenizer_file(version).read_bytes())
        for version in ("v1", "v2", "v3", "v7")
    }


def sentencepiece_model_from_vocabulary(
    tokens: list[str], scores: list[float], types: list[int], special: Mapping[str, int]
) -> Any:
    """A SentencePiece `ModelProto` for Mistral's tokenizer settings (BPE, byte fallback, identity normalization,
    dummy prefix) holding `tokens` with their `scores` and `types` (GGUF token types are SentencePiece's)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    for token, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add(piece=token, score=score)
        if kind != _NORMAL:  # SentencePiece leaves the default type unset
            piece.type = kind
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = _BYTE in types
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.max_sentencepiece_length = 16
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = (
        special["unk"],
        special["bos"],
        special["eos"],
        -1,
    )
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece = (tokens[special[n]] for n in ("unk", "bos", "eos"))
    reserved = {special["unk"], special["bos"], special["eos"]}
    trainer.control_symbols.extend(t for i, t in enumerate(tokens) if types[i] == _CONTROL and i not in reserved)
    trainer.user_defined_symbols.extend(t for i, t in enumerate(tokens) if types[i] == _USER_DEFINED)
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.precompiled_charsmap = b""
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.normalization_rule_tsv = ""
    return model


def _matching_version(tokens: list[str], scores: list[float], types: list[int], source: Any) -> tuple[str, Any]:
    """Which of Mistral's SentencePiece tokenizers (v1, v2, v3, v7) this vocabulary is, piece for piece; and that
    reference model."""
    best: tuple[int, str] | None = None
    for version, reference in _reference_vocabularies().items():
        pieces = reference.pieces
        if len(tokens) < len(pieces):
            continue
        differing = [
            i
            for i, piece in enumerate(pieces)
            if tokens[i] != piece.piece
            # llama.cpp's converter scores control and added tokens -1000, writes user-defined pieces as normal or
            # control ones: Mistral's scores and types for those pieces are restored below.
            or (piece.type in (_NORMAL, _BYTE) and (types[i] != piece.type or scores[i] != piece.score))
            or (piece.type in (_CONTROL, _UNKNOWN) and types[i] not in (_CONTROL, _UNKNOWN))
            or (piece.type == _USER_DEFINED and types[i] not in (_USER_DEFINED, _CONTROL, _NORMAL))
        ]
        if not differing:
            return version, reference
        if best is None or len(differing) < best[0]:
            best = (len(differing), f"{version} differs at id {differing[0]} ({tokens[differing[0]]!r})")
    detail = f"; closest: {best[1]}" if best else ""
    raise GGUFError(
        f"{source}: the vocabulary is not one of Mistral's SentencePiece tokenizers (v1, v2, v3, v7){detail}. The kit "
        "only vouches for those; load this tokenizer with transformers.AutoTokenizer.from_pretrained(..., "
        "gguf_file=...) or from the model's original repository."
    )


def tokenizer_files_from_gguf_fields(fields: Mapping[str, Any], source: Any) -> tuple[str, bytes, list[str]]:
    """(version, serialized SentencePiece model, added tokens beyond it) rebuilt from a GGUF's vocabulary."""
    model_kind = fields.get("tokenizer.ggml.model")
    if model_kind != "llama":
        raise GGUFError(
            f"{source} holds a {model_kind!r} tokenizer, not a SentencePiece one (tokenizer.ggml.model 'llama'); the "
            "kit rebuilds Mistral's SentencePiece tokenizers (v1/v2/v3/v7) from a GGUF, not tekken ones."
        )
    tokens = list(fields.get("tokenizer.ggml.tokens") or [])
    scores = [float(s) for s in fields.get("tokenizer.ggml.scores") or [0.0] * len(tokens)]
    types = [int(t) for t in fields.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)]
    if not tokens or len(scores) != len(tokens) or len(types) != len(tokens):
        raise GGUFError(f"{source}: the vocabulary (tokens, scores, token types) is missing or inconsistent.")
    version, reference = _matching_version(tokens, scores, types, source)
    base = len(reference.pieces)
    special = {
        "unk": int(fields.get("tokenizer.ggml.unknown_token_id", reference.trainer_spec.unk_id)),
        "bos": int(fields.get("tokenizer.ggml.bos_token_id", reference.trainer_spec.bos_id)),
        "eos": int(fields.get("tokenizer.ggml.eos_token_id", reference.trainer_spec.eos_id)),
    }
    for name, expected in (("unk", reference.trainer_spec.unk_id), ("bos", 1), ("eos", 2)):
        if special[name] != expected:
            raise GGUFError(f"{source}: {name} token id {special[name]} is not Mistral's ({expected}).")
    # Pieces whose score or control/user-defined type llama.cpp rewrote get Mistral's values back.
    fixed_scores = [piece.score for piece in reference.pieces]
    fixed_types = [piece.type for piece in reference.pieces]
    model = sentencepiece_model_from_vocabulary(tokens[:base], fixed_scores, fixed_types, special)
    if fixed_scores != scores[:base] or fixed_types != types[:base]:
        logger.info("%s: scores/types of control pieces restored to Mistral's tokenizer %s.", source, version)
    added = []
    for i in range(base, len(tokens)):
        if types[i] in (_CONTROL, _USER_DEFINED):
            added.append(tokens[i])
        elif types[i] != _UNUSED:  # llama.cpp pads vocabularies with unused [PADn] tokens
            raise GGUFError(f"{source}: token {i} ({tokens[i]!r}) extends Mistral's vocabulary as a normal piece.")
        elif added and i < len(tokens) - 1 and types[i + 1] != _UNUSED:
            raise GGUFError(f"{source}: added tokens after unused ones are not supported.")
    return version, model.SerializeToString(), added


def _cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hf-mistral-kit"


def tokenizer_from_gguf_fields(fields: Mapping[str, Any], source: Any, **kwargs: Any):
    """The kit tokenizer for a GGUF's vocabulary: the SentencePiece model rebuilt as `tokenizer.model.vN` (plus
    `added_tokens.json` for tokens beyond it) under the kit's cache, loaded with `load_tokenizer`."""
    from .tokenizer import load_tokenizer

    version, model, added = tokenizer_files_from_gguf_fields(fields, source)
    position = {token: index for index, token in enumerate(fields["tokenizer.ggml.tokens"])}
    added_json = json.dumps({t: position[t] for t in added}, ensure_ascii=False, indent=2) if added else ""
    digest = hashlib.sha256(model + added_json.encode()).hexdigest()[:16]
    try:
        model_file = _store_tokenizer(_cache_root() / "gguf-tokenizers" / digest, version, model, added_json)
    except OSError:  # a read-only cache: a private temporary directory instead
        import tempfile

        model_file = _store_tokenizer(Path(tempfile.mkdtemp(prefix="hf-mistral-kit-gguf-")), version, model, added_json)
    tokenizer = load_tokenizer(model_file, **kwargs)
    pad = fields.get("tokenizer.ggml.padding_token_id")
    if (
        "pad_token" not in kwargs
        and pad is not None
        and int(pad) != tokenizer.eos_token_id
        and int(pad) < len(tokenizer)
    ):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
    template = fields.get("tokenizer.chat_template")
    if template and template != tokenizer.chat_template:
        logger.info("%s: its chat template is replaced by the kit's exact one for tokenizer %s.", source, version)
    return tokenizer


def _store_tokenizer(directory: Path, version: str, model: bytes, added_json: str) -> Path:
    """`directory/tokenizer.model.<version>` holding `model` (and `added_tokens.json`), written atomically once."""
    model_file = directory / f"tokenizer.model.{version}"
    if model_file.is_file() and model_file.read_bytes() == model:
        return model_file
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (("added_tokens.json", added_json.encode()), (model_file.name, model)):
        if data:
            staging = directory / f".{name}.{os.getpid()}"
            staging.write_bytes(data)
            staging.replace(directory / name)
    return model_file


def load_gguf_tokenizer(path: str | os.PathLike, **kwargs: Any):
    """The exact kit tokenizer (mistral-common's ids, the matching chat template) of a Mistral GGUF file; keyword
    arguments are tokenizer arguments, as for `load_tokenizer`."""
    return tokenizer_from_gguf_fields(read_gguf_metadata(path), Path(path), **kwargs)


# --- writing ------------------------------------------------------------------------------------------------------


def _tokenizer_source(src: Path) -> Path:
    files = sorted(f for f in src.iterdir() if f.is_file() and TOKENIZER_FILE_PATTERN.match(f.name))
    sentencepiece = [f for f in files if not f.name.startswith("tekken")]
    if not sentencepiece:
        if files:
            raise GGUFError(
                f"{src} has a tekken tokenizer; the kit writes GGUF files with Mistral's SentencePiece vocabularies "
                "only. Use llama.cpp's convert_hf_to_gguf.py on a copy of the folder without tekken.json (the "
                "README's llama.cpp section says why)."
            )
        raise GGUFError(
            f"{src} has no tokenizer file: a GGUF carries the SentencePiece vocabulary (tokenizer.model or "
            "tokenizer.model.v1/v2/v3/v7). Copy the model's tokenizer file into it."
        )
    versioned = [f for f in sentencepiece if re.search(r"\.model\.v\d+", f.name)]
    return (versioned or sentencepiece)[0]


def _added_tokens(src: Path, base: int) -> dict[int, tuple[str, bool]]:
    """Tokens a fine-tune added beyond the SentencePiece vocabulary: id -> (content, special)."""
    added: dict[int, tuple[str, bool]] = {}
    config = src / "tokenizer_config.json"
    if config.is_file():
        for key, entry in json.loads(config.read_text()).get("added_tokens_decoder", {}).items():
            if int(key) >= base:
                added[int(key)] = (entry["content"], bool(entry.get("special", True)))
    if (src / "added_tokens.json").is_file():
        for token, index in json.loads((src / "added_tokens.json").read_text()).items():
            if index >= base:
                added.setdefault(int(index), (token, True))
    return added


def gguf_vocabulary(src: Path, vocab_size: int) -> dict[str, Any]:
    """The vocabulary llama.cpp needs, from `src`'s SentencePiece file (and added tokens), padded to `vocab_size`."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    model_file = _tokenizer_source(src)
    model = pb.ModelProto.FromString(model_file.read_bytes())
    tokens = [piece.piece for piece in model.pieces]
    scores = [piece.score for piece in model.pieces]
    types = [piece.type for piece in model.pieces]
    for index, (content, special) in sorted(_added_tokens(src, len(tokens)).items()):
        if index != len(tokens):
            raise GGUFError(f"{src}: added token {content!r} has id {index}, expected {len(tokens)} (ids must follow).")
        tokens.append(content)
        scores.append(-1000.0)
        types.append(_CONTROL if special else _USER_DEFINED)
    if len(tokens) > vocab_size:
        raise GGUFError(f"{src}: the tokenizer has {len(tokens)} tokens, more than vocab_size ({vocab_size}).")
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        scores.append(-1000.0)
        types.append(_UNUSED)
    processor = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
    return {
        "file": model_file,
        "tokens": tokens,
        "scores": scores,
        "types": types,
        "bos": processor.bos_id(),
        "eos": processor.eos_id(),
        "unk": processor.unk_id(),
    }


# llama.cpp's SentencePiece tokenizer puts a space before every piece of text that follows a special token when
# `add_space_prefix` is true (and before none when false). Tokenizer v1 (Mistral 7B v0.1/v0.2, Mixtral 8x7B) encodes
# every such piece with SentencePiece's dummy prefix, so llama.cpp's ids for a kit-rendered chat equal mistral-common's
# with `true`; v2/v3 templates write the space after [INST]/[/INST] themselves and SentencePiece adds a dummy prefix
# only at the very start of the input, so llama.cpp's chat ids match with `false` (plain text given to llama.cpp's
# tokenizer then gets no leading space).
ADD_SPACE_PREFIX = {"v1": True, "v2": False, "v3": False, "v7": False}


def _version_of(vocabulary: Mapping[str, Any]) -> str:
    return _matching_version(vocabulary["tokens"], vocabulary["scores"], vocabulary["types"], vocabulary["file"])[0]


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

    if len(shape) <= 1 or _F32_ALWAYS.fullmatch(name):
        return Q.F32
    if qtype not in (Q.F32, Q.F16, Q.BF16) and shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        return Q.F16  # rows that are not a whole number of blocks (llama.cpp's converter falls back the same way)
    return qtype


def _nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def gguf_tensor_plan(native: Mapping[str, LazyTensor], config: Any) -> list[tuple[str, tuple[int, ...], Callable]]:
    """(GGUF name, shape, read) for every tensor of the file, experts stacked per layer, in llama.cpp's order."""
    plan: dict[str, tuple[tuple[int, ...], Callable]] = {}
    experts: dict[tuple[int, str], dict[int, LazyTensor]] = {}
    for key, tensor in native.items():
        match = _NATIVE_EXPERT.fullmatch(key)
        if match is not None:
            layer, expert, name = match.groups()
            experts.setdefault((int(layer), name), {})[int(expert)] = tensor
            continue
        name = rename_key(key, _NATIVE_TO_GGUF)
        if name is None:
            raise GGUFError(f"Weight {key!r} has no GGUF name.")
        plan[name] = (tensor.shape, tensor.read)
    part = {"w1": "gate", "w2": "down", "w3": "up"}
    for (layer, name), by_expert in experts.items():
        parts = [by_expert[e] for e in range(len(by_expert))]

        def read(parts: list[LazyTensor] = parts) -> torch.Tensor:
            return torch.stack([p.read() for p in parts])

        plan[f"blk.{layer}.ffn_{part[name]}_exps.weight"] = ((len(parts), *parts[0].shape), read)

    def order(name: str) -> tuple:
        match = re.match(r"blk\.(\d+)\.(.*)", name)
        if match is None:
            return (0 if name == "token_embd.weight" else 2, name)
        return (1, int(match.group(1)), match.group(2))

    return [(name, *plan[name]) for name in sorted(plan, key=order)]


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
    its kit config, and the tokenizer of `src`. `dtype` None keeps the weights' own float type."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    from .tokenizer import load_tokenizer

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
    rope = config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise GGUFError(f"rope_type {rope['rope_type']!r} is not written to GGUF by the kit; only default RoPE.")
    vocabulary = gguf_vocabulary(src, config.vocab_size)
    version = _version_of(vocabulary)
    chat_template = load_tokenizer(src).chat_template

    context = config.max_position_embeddings
    window = config.sliding_window
    if window is not None and window < context:
        message = (
            f"{src}: sliding_window {window} is shorter than the context ({context}), and llama.cpp's llama "
            f"architecture attends to the whole context. The GGUF declares a context length of {window}, within which "
            "both attend alike; prompts longer than that will differ from the original model."
        )
        warnings.warn(message, stacklevel=3)
        context = window

    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    plan = gguf_tensor_plan(native, config)
    writer = gguf.GGUFWriter(path=None, arch=GGUF_ARCHITECTURE)
    writer.add_name(name or src.name)
    writer.add_file_type(file_type)
    if qtype not in (Q.F32, Q.F16, Q.BF16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(context)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope.get("rope_theta", 10_000.0))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if window is not None:
        writer.add_sliding_window(window)  # llama.cpp's llama architecture ignores it; the kit reads it back
    if hasattr(config, "num_local_experts"):
        writer.add_expert_count(config.num_local_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_scores(vocabulary["scores"])
    writer.add_token_types(vocabulary["types"])
    writer.add_bos_token_id(vocabulary["bos"])
    writer.add_eos_token_id(vocabulary["eos"])
    writer.add_unk_token_id(vocabulary["unk"])
    if config.pad_token_id is not None and config.pad_token_id != vocabulary["eos"]:
        writer.add_pad_token_id(config.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(ADD_SPACE_PREFIX[version])
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


def convert_to_gguf(src: Path, dst: Path, dtype: str | None = None) -> Path:
    """`convert_checkpoint(src, dst, to="gguf", dtype=...)`: an HF or native Mistral/Mixtral directory to one GGUF."""
    import tempfile

    from transformers import AutoConfig

    from .modeling import KitMistralConfig, KitMixtralConfig, to_kit_config
    from .native import (
        NativeCheckpoint,
        _hf_weight_files,
        _TensorFiles,
        native_checkpoint_dir,
        native_tensors_from_hf,
    )

    if dtype is not None and dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}.")
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; pick a new destination.")
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a checkpoint directory.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    handle, staging_name = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(handle)
    staging = Path(staging_name)
    files = None
    try:
        if native_checkpoint_dir(src) is not None:
            checkpoint = NativeCheckpoint(src)
            files = checkpoint
            config_class = KitMixtralConfig if checkpoint.config["model_type"] == "mixtral" else KitMistralConfig
            config = config_class.from_dict(checkpoint.config)
            native = checkpoint.native_tensors
        elif (src / "config.json").is_file():
            config = to_kit_config(AutoConfig.from_pretrained(src))
            files = _TensorFiles(_hf_weight_files(src), f"Re-download the file into {src}.")
            native = native_tensors_from_hf(files.tensors, config)
        else:
            raise GGUFError(f"{src} is neither a Hugging Face (config.json) nor a native (params.json) checkpoint.")
        write_gguf(native, config, src, staging, dtype, name=src.name, label=dst.name)
        staging.replace(dst)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    finally:
        if files is not None:
            files.close()
    return dst
