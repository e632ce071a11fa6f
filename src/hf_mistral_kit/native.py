"""Mistral's native checkpoint layout: loading it like a Hugging Face checkpoint, and converting both ways.

A native directory holds `params.json` (`dim`, `n_layers`, ..., and `moe` for Mixtral), the weights in
`consolidated.safetensors` (or shards `consolidated.NN.safetensors` / `consolidated-0000N-of-0000M.safetensors`, or
legacy `consolidated.NN.pth`) with mistral-inference's names (`tok_embeddings`, `layers.N.attention.wq`, ...), and a
tokenizer file (`tokenizer.model.v3`, `tekken.json`, ...).

Loading maps each native key to its transformers name and undoes Mistral's interleaved rotary layout of `wq`/`wk`
(transformers rotates halves) lazily, tensor by tensor, as transformers' own loader reads the state dict: nothing is
converted on disk, safetensors stay memory-mapped, and everything transformers does while loading (dtype casts,
`device_map`, bitsandbytes quantization, Mixtral's expert merging) applies unchanged. The `wq`/`wk` rows are read
from the file straight into their rotate-half places (`read_rows`), so the permutation costs no copy beyond the read
and native checkpoints load as fast as the Hugging Face layout. Native Mixtral experts are handed over under
transformers 4.x names (`block_sparse_moe.experts.N.w1`), which the kit Mixtral's registered conversion mapping
already knows; the first Mixtral release's stacked experts (`block_sparse_moe.w1/w2/w3`) are split into those.
The name tables, shape checks and loading-report check here are shared by the GGUF reader (`hf_mistral_kit.gguf`).

Problems are reported before any weight is read, naming the file, key or field and the fix: unreadable or truncated
safetensors, missing `params.json` fields, unknown or missing keys, wrong shapes, `.pth` files holding anything but
tensors. A checkpoint is never loaded partially.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from transformers.utils.logging import tqdm

from .config_checks import check_params

PARAMS_FILE = "params.json"
NATIVE_SAFETENSORS = "consolidated.safetensors"
HF_SAFETENSORS = "model.safetensors"
# Tokenizer files (Mistral's, and SentencePiece's `tokenizer.model`): copied by `convert_checkpoint`.
TOKENIZER_FILE_PATTERN = re.compile(r"^(tokenizer\.model(\.v\d+\w*)?|.*\.model\.v\d+\w*|tekken.*\.json)$")
_SAFETENSORS_SHARD = re.compile(r"^consolidated(\.\d+|-\d+-of-\d+)?\.safetensors$")
_PTH_SHARD = re.compile(r"^consolidated(\.\d+)?\.pth?$")

# A params.json is a few hundred bytes: anything far larger is not one (and is not read into memory).
MAX_PARAMS_BYTES = 1 << 20
# safetensors' own limit on the JSON header of a file.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000

# params.json fields mistral-inference requires, with their types.
_REQUIRED_PARAMS = {
    "dim": int,
    "n_layers": int,
    "head_dim": int,
    "hidden_dim": int,
    "n_heads": int,
    "n_kv_heads": int,
    "norm_eps": float,
    "vocab_size": int,
}
# Mistral 7B v0.1 (the one release whose params.json has no `rope_theta`) was trained with 10000.
DEFAULT_ROPE_THETA = 10_000.0
DEFAULT_MAX_POSITION_EMBEDDINGS = 32_768


class NativeCheckpointError(ValueError):
    """A Mistral native checkpoint (or a conversion to or from one) that cannot be read correctly."""


# --- params.json <-> transformers config ----------------------------------------------------------------------


def native_checkpoint_dir(path: str | os.PathLike, subfolder: str = "") -> Path | None:
    """The directory if `path` (+ `subfolder`) is a local native checkpoint: `params.json` and no `config.json`.

    Repositories shipping both layouts (e.g. Mistral-7B-Instruct-v0.3) load the Hugging Face one, as transformers does.
    """
    directory = Path(path) / subfolder if subfolder else Path(path)
    if (directory / PARAMS_FILE).is_file() and not (directory / "config.json").is_file():
        return directory
    return None


def config_dict_from_params(directory: str | os.PathLike) -> dict[str, Any]:
    """Translate a directory's `params.json` into a transformers config dict (`model_type` `mistral` or `mixtral`)."""
    path = Path(directory) / PARAMS_FILE
    try:
        if not path.is_file():  # a FIFO would block the read below, a directory cannot be read
            raise OSError("not a regular file")
        with open(path, "rb") as stream:
            data = stream.read(MAX_PARAMS_BYTES + 1)
        if len(data) > MAX_PARAMS_BYTES:
            raise OSError(f"larger than {MAX_PARAMS_BYTES // 1024} KiB, which no params.json is")
        params = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
        raise NativeCheckpointError(f"Cannot read {path}: {error}.") from error
    return config_dict_from_params_dict(params, source=path)


def config_dict_from_params_dict(params: Any, source: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Translate the contents of a `params.json` (named `source` in errors) into a transformers config dict.

    Every field the kit reads is checked first (`config_checks.check_params`): types, bounds, consistency.
    """
    path = source
    if not isinstance(params, dict):
        raise NativeCheckpointError(f"{path} must hold a JSON object, got {type(params).__name__}.")

    missing = [name for name in _REQUIRED_PARAMS if name not in params]
    if missing:
        raise NativeCheckpointError(
            f"{path} is missing required field(s) {', '.join(map(repr, missing))}; a Mistral native params.json "
            f"defines {', '.join(_REQUIRED_PARAMS)} (and `moe` for Mixtral). Restore the file from the original "
            "release."
        )
    check_params(params, path, NativeCheckpointError)
    for name in ("vision_encoder", "lora", "quantization"):
        if params.get(name):
            raise NativeCheckpointError(f"{path}: `{name}` checkpoints are not supported (only text models).")
    if params.get("model_type", "transformer") != "transformer":
        raise NativeCheckpointError(f"{path}: model_type {params['model_type']!r} is not a Mistral transformer.")

    sliding_window = params.get("sliding_window")
    config = {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "hidden_size": params["dim"],
        "num_hidden_layers": params["n_layers"],
        "head_dim": params["head_dim"],
        "intermediate_size": params["hidden_dim"],
        "num_attention_heads": params["n_heads"],
        "num_key_value_heads": params["n_kv_heads"],
        "rms_norm_eps": params["norm_eps"],
        "vocab_size": params["vocab_size"],
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": float(params.get("rope_theta") or DEFAULT_ROPE_THETA),
        },
        "sliding_window": int(sliding_window) if sliding_window is not None else None,
        "max_position_embeddings": params.get("max_position_embeddings")
        or params.get("max_seq_len")
        or DEFAULT_MAX_POSITION_EMBEDDINGS,
        "tie_word_embeddings": bool(params.get("tied_embeddings", False)),
    }
    moe = params.get("moe")
    if moe is not None:
        config.update(
            model_type="mixtral",
            architectures=["MixtralForCausalLM"],
            num_local_experts=moe["num_experts"],
            num_experts_per_tok=moe["num_experts_per_tok"],
        )
    return config


def params_from_config(config: Any) -> dict[str, Any]:
    """Translate a transformers Mistral/Mixtral config into a native `params.json` dict."""
    rope = config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise NativeCheckpointError(
            f"rope_type {rope['rope_type']!r} has no params.json equivalent; only default RoPE models convert."
        )
    params = {
        "dim": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "head_dim": config.head_dim or config.hidden_size // config.num_attention_heads,
        "hidden_dim": config.intermediate_size,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "norm_eps": config.rms_norm_eps,
        "vocab_size": config.vocab_size,
        "rope_theta": rope.get("rope_theta", DEFAULT_ROPE_THETA),
        # mistral-inference reads `max_seq_len`; Mistral's newer releases, vLLM (which otherwise assumes 128k) and
        # llama.cpp's converter read `max_position_embeddings`.
        "max_seq_len": config.max_position_embeddings,
        "max_position_embeddings": config.max_position_embeddings,
    }
    if config.sliding_window is not None:
        params["sliding_window"] = config.sliding_window
    if config.tie_word_embeddings:
        params["tied_embeddings"] = True
    if hasattr(config, "num_local_experts"):
        params["moe"] = {"num_experts": config.num_local_experts, "num_experts_per_tok": config.num_experts_per_tok}
    return params


# --- key names, shapes and the rotary permutation -----------------------------------------------------------------

_L = r"layers\.(\d+)\."
_NATIVE_TO_HF = [
    (re.compile(r"tok_embeddings\.weight"), "model.embed_tokens.weight"),
    (re.compile(r"norm\.weight"), "model.norm.weight"),
    (re.compile(r"output\.weight"), "lm_head.weight"),
    (re.compile(_L + r"attention\.wq\.weight"), r"model.layers.\1.self_attn.q_proj.weight"),
    (re.compile(_L + r"attention\.wk\.weight"), r"model.layers.\1.self_attn.k_proj.weight"),
    (re.compile(_L + r"attention\.wv\.weight"), r"model.layers.\1.self_attn.v_proj.weight"),
    (re.compile(_L + r"attention\.wo\.weight"), r"model.layers.\1.self_attn.o_proj.weight"),
    (re.compile(_L + r"attention_norm\.weight"), r"model.layers.\1.input_layernorm.weight"),
    (re.compile(_L + r"ffn_norm\.weight"), r"model.layers.\1.post_attention_layernorm.weight"),
    (re.compile(_L + r"feed_forward\.w1\.weight"), r"model.layers.\1.mlp.gate_proj.weight"),
    (re.compile(_L + r"feed_forward\.w2\.weight"), r"model.layers.\1.mlp.down_proj.weight"),
    (re.compile(_L + r"feed_forward\.w3\.weight"), r"model.layers.\1.mlp.up_proj.weight"),
    # Mixtral: mistral-inference says `feed_forward`, the first release said `block_sparse_moe`. The transformers
    # names are the 4.x per-expert ones, which the kit Mixtral's conversion mapping merges or keeps per expert.
    (
        re.compile(_L + r"(?:feed_forward|block_sparse_moe)\.gate\.weight"),
        r"model.layers.\1.block_sparse_moe.gate.weight",
    ),
    (
        re.compile(_L + r"(?:feed_forward|block_sparse_moe)\.experts\.(\d+)\.(w[123])\.weight"),
        r"model.layers.\1.block_sparse_moe.experts.\2.\3.weight",
    ),
]
_HF_TO_NATIVE = [
    (re.compile(r"model\.embed_tokens\.weight"), "tok_embeddings.weight"),
    (re.compile(r"model\.norm\.weight"), "norm.weight"),
    (re.compile(r"lm_head\.weight"), "output.weight"),
    (re.compile(r"model\." + _L + r"self_attn\.([qkvo])_proj\.weight"), r"layers.\1.attention.w\2.weight"),
    (re.compile(r"model\." + _L + r"input_layernorm\.weight"), r"layers.\1.attention_norm.weight"),
    (re.compile(r"model\." + _L + r"post_attention_layernorm\.weight"), r"layers.\1.ffn_norm.weight"),
    (re.compile(r"model\." + _L + r"mlp\.gate_proj\.weight"), r"layers.\1.feed_forward.w1.weight"),
    (re.compile(r"model\." + _L + r"mlp\.down_proj\.weight"), r"layers.\1.feed_forward.w2.weight"),
    (re.compile(r"model\." + _L + r"mlp\.up_proj\.weight"), r"layers.\1.feed_forward.w3.weight"),
    (re.compile(r"model\." + _L + r"block_sparse_moe\.gate\.weight"), r"layers.\1.feed_forward.gate.weight"),
    (
        re.compile(r"model\." + _L + r"block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight"),
        r"layers.\1.feed_forward.experts.\2.\3.weight",
    ),
]
# The first Mixtral release (the December 2023 torrent, `consolidated.00.pth`) stacks each layer's experts in one
# tensor per projection, without a `.weight` suffix: `block_sparse_moe.w1`/`w3` are [num_experts * hidden_dim, dim]
# (expert E's rows E * hidden_dim ...), `w2` too, each expert's block being its `w2` transposed.
_STACKED_EXPERTS = re.compile(_L + r"block_sparse_moe\.(w[123])")
# transformers 5.x Mixtral layout (router under `mlp`, experts fused), brought back to 4.x names before export.
_HF_FUSED_EXPERTS = re.compile(r"model\." + _L + r"mlp\.experts\.(gate_up_proj|down_proj)")
_HF_ROUTER = re.compile(r"model\." + _L + r"mlp\.gate\.weight")
_FUSED_PARTS = {"gate_up_proj": ("w1", "w3"), "down_proj": ("w2",)}


def _listed(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(map(repr, names[:shown]))
    return listed if len(names) <= shown else f"{listed} ... ({len(names)} in all)"


def rename_key(key: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    """`key` renamed by the first (pattern, replacement) of `table` that matches it whole; None if none does."""
    for pattern, replacement in table:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def expected_weight_count(config: Mapping[str, Any]) -> int:
    """How many entries `expected_hf_shapes(config)` has, without building it (memory independent of the config)."""
    per_layer = 6 + (1 + 3 * config["num_local_experts"] if config["model_type"] == "mixtral" else 3)
    return 2 + (0 if config.get("tie_word_embeddings") else 1) + config["num_hidden_layers"] * per_layer


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the causal LM `config` describes, in closed form (no table, whatever the config says)."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    experts = config.get("num_local_experts") or 0 if config["model_type"] == "mixtral" else 0
    mlp = experts * (3 * inter * hidden + hidden) if experts else 3 * inter * hidden
    layer = 2 * q * hidden + 2 * kv * hidden + 2 * hidden + mlp
    lm_head = 0 if config.get("tie_word_embeddings") else vocab * hidden
    return vocab * hidden + lm_head + hidden + config["num_hidden_layers"] * layer


def _check_size(config: Mapping[str, Any], files: list[Path], params: Path) -> None:
    """Refuse a params.json describing more parameters than the weight files have bytes (any dtype has >= 1)."""
    available = sum(file.stat().st_size for file in files)
    needed = parameter_count(config)
    if needed > available:
        raise NativeCheckpointError(
            f"{params} describes {needed:,} parameters ({config['num_hidden_layers']} layers{_experts_note(config)}), "
            f"more than the {available:,} bytes of weights next to it hold: check n_layers, dim, hidden_dim and "
            "moe.num_experts there, or re-download the checkpoint."
        )


def _experts_note(config: Mapping[str, Any]) -> str:
    return f" of {config['num_local_experts']} experts" if config["model_type"] == "mixtral" else ""


def expected_hf_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight of a causal LM described by `config` (a transformers config dict), with its shape.

    Mixtral experts use the 4.x per-expert names, as in native checkpoints.
    """
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_rows, kv_rows = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, hidden)
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes.update(
            {
                prefix + "self_attn.q_proj.weight": (q_rows, hidden),
                prefix + "self_attn.k_proj.weight": (kv_rows, hidden),
                prefix + "self_attn.v_proj.weight": (kv_rows, hidden),
                prefix + "self_attn.o_proj.weight": (hidden, q_rows),
                prefix + "input_layernorm.weight": (hidden,),
                prefix + "post_attention_layernorm.weight": (hidden,),
            }
        )
        if config["model_type"] == "mixtral":
            experts = config["num_local_experts"]
            shapes[prefix + "block_sparse_moe.gate.weight"] = (experts, hidden)
            for expert in range(experts):
                expert_prefix = f"{prefix}block_sparse_moe.experts.{expert}."
                shapes[expert_prefix + "w1.weight"] = (inter, hidden)
                shapes[expert_prefix + "w2.weight"] = (hidden, inter)
                shapes[expert_prefix + "w3.weight"] = (inter, hidden)
        else:
            shapes[prefix + "mlp.gate_proj.weight"] = (inter, hidden)
            shapes[prefix + "mlp.down_proj.weight"] = (hidden, inter)
            shapes[prefix + "mlp.up_proj.weight"] = (inter, hidden)
    return shapes


def rotary_to_hf(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder `wq`/`wk` rows from Mistral's interleaved rotary pairs to transformers' rotate-half layout."""
    rows, cols = weight.shape
    return weight.reshape(num_heads, rows // num_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_to_native(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of `rotary_to_hf`."""
    rows, cols = weight.shape
    return weight.reshape(num_heads, 2, rows // num_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_row_order(rows: int, num_heads: int, to: Literal["hf", "native"]) -> list[int]:
    """`order[r]`: the row that source row `r` lands on under `rotary_to_hf` (or `rotary_to_native`)."""
    half = rows // num_heads // 2
    order = []
    for row in range(rows):
        head, within = divmod(row, 2 * half)
        if to == "hf":  # native (pair i, member j) -> hf (half j, position i)
            pair, member = divmod(within, 2)
            order.append(head * 2 * half + member * half + pair)
        else:
            member, pair = divmod(within, half)
            order.append(head * 2 * half + pair * 2 + member)
    return order


def _rotary_heads(hf_key: str, config: Mapping[str, Any]) -> int | None:
    if hf_key.endswith("self_attn.q_proj.weight"):
        return config["num_attention_heads"]
    if hf_key.endswith("self_attn.k_proj.weight"):
        return config["num_key_value_heads"]
    return None


# --- lazily read tensors ----------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SAFETENSORS_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class LazyTensor:
    """A checkpoint tensor read on demand: `read()` loads `source[index]` (mmap-backed) and applies `transform`.

    It also speaks the protocol transformers' loader uses for safetensors slices in a state dict (`value[...]` to
    materialize, `dtype`, `is_floating_point()`), so a dict of these can be passed as `from_pretrained(state_dict=)`.

    `location` (file, byte offset) is known for tensors stored raw in a file (safetensors). A row permutation
    (`transform` with a `row_order`, e.g. the rotary reordering of `wq`/`wk`) is then applied while reading: the rows
    are read from the file straight into their permuted places, so permuting costs no copy beyond the read itself and
    the source pages are never mapped into the process.
    """

    source: Any  # a safetensors slice, a torch.Tensor, or any object whose `[index]` gives a tensor
    dtype: torch.dtype
    shape: tuple[int, ...]
    index: Any = Ellipsis
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    location: tuple[Path, int] | None = None

    def read(self) -> torch.Tensor:
        row_order = getattr(self.transform, "row_order", None)
        if row_order is not None and self.location is not None and self.index is Ellipsis and _CAN_READ_ROWS:
            return read_rows(*self.location, self.dtype, self.shape, row_order(self.shape[0]))
        tensor = self.source[self.index]
        return self.transform(tensor) if self.transform is not None else tensor

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.read()[index]

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> LazyTensor:
        if self.transform is not None:
            raise ValueError("LazyTensor already has a transform.")
        return LazyTensor(self.source, self.dtype, self.shape, self.index, transform, self.location)

    def sliced(self, index: Any, shape: tuple[int, ...]) -> LazyTensor:
        """The part `index` (of the untransformed tensor) of this tensor, of shape `shape`."""
        if self.index is not Ellipsis or self.transform is not None:
            raise ValueError("Only a plain LazyTensor can be sliced.")
        return LazyTensor(self.source, self.dtype, shape, index)


# preadv scatters one contiguous read of the file into many buffers (the permuted rows) in one system call.
_CAN_READ_ROWS = hasattr(os, "preadv") and sys.byteorder == "little"
_IOV_MAX = (os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 0) or 1024


def read_rows(path: Path, offset: int, dtype: torch.dtype, shape: tuple[int, ...], order: list[int]) -> torch.Tensor:
    """Read the row-major tensor stored raw at `offset` in `path`, source row `r` landing on row `order[r]`."""
    out = torch.empty(shape, dtype=dtype)
    rows = shape[0]
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    destination = out.view(torch.uint8).reshape(rows, row_bytes).numpy()
    buffers = [destination[row] for row in order]
    with open(path, "rb", buffering=0) as stream:
        for start in range(0, rows, _IOV_MAX):
            chunk = buffers[start : start + _IOV_MAX]
            read = os.preadv(stream.fileno(), chunk, offset + start * row_bytes)
            if read != len(chunk) * row_bytes:
                raise NativeCheckpointError(f"{path} ended early (truncated while being read?). Re-download it.")
    return out


class _TensorFiles:
    """Lazily readable tensors of a set of checkpoint files (safetensors memory-mapped, `.pth` via `weights_only`)."""

    def __init__(self, files: list[Path], fix: str):
        self.tensors: dict[str, LazyTensor] = {}
        self._handles: list[Any] = []
        for file in files:
            for key, tensor in self._open(file, fix):
                if key in self.tensors:
                    raise NativeCheckpointError(f"{key!r} appears in more than one file ({file.name} repeats it).")
                self.tensors[key] = tensor

    def _open(self, file: Path, fix: str) -> Iterator[tuple[str, LazyTensor]]:
        if file.suffix == ".safetensors":
            expected_size = _safetensors_size(file, fix)
            if file.stat().st_size != expected_size:
                raise NativeCheckpointError(
                    f"{file} is truncated or corrupted: its header describes {expected_size} bytes, the file has "
                    f"{file.stat().st_size}. {fix}"
                )
            try:
                handle = safe_open(file, framework="pt", device="cpu")
            except (SafetensorError, OSError) as error:
                raise NativeCheckpointError(f"{file} is not a readable safetensors file ({error}). {fix}") from error
            self._handles.append(handle)
            offsets = _safetensors_offsets(file)
            names = handle.keys()
            for key in names:
                part = handle.get_slice(key)
                dtype = _SAFETENSORS_DTYPES.get(part.get_dtype())
                if dtype is None:  # the header was checked; a file changed since is still not a crash
                    raise NativeCheckpointError(f"{file}: tensor {key!r} has dtype {part.get_dtype()}, unsupported.")
                yield key, LazyTensor(part, dtype, tuple(part.get_shape()), location=(file, offsets[key]))
            return
        yield from _load_pth(file, fix)

    def close(self) -> None:
        for handle in self._handles:
            handle.__exit__(None, None, None)
        self._handles.clear()


def _safetensors_size(file: Path, fix: str) -> int:
    """The file size a safetensors header announces (8-byte length + JSON header + data), after checking the header:
    a JSON object of tensors with a known dtype, a shape and offsets that agree with it. Reads the header only."""
    try:
        if not file.is_file():  # a FIFO would block, a device never ends
            raise ValueError("not a regular file")
        file_size = file.stat().st_size
        with open(file, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{file_size} bytes, too short for a safetensors header")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > min(file_size - 8, MAX_SAFETENSORS_HEADER_BYTES):
                raise ValueError(f"header length {header_size} exceeds the file size or safetensors' limit")
            header = json.loads(stream.read(header_size).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
        data_size = max((_header_entry_end(name, entry) for name, entry in header.items()), default=0)
    except (OSError, ValueError, RecursionError, struct.error) as error:  # UnicodeDecodeError is a ValueError
        raise NativeCheckpointError(f"{file} is not a readable safetensors file ({error}). {fix}") from error
    return 8 + header_size + data_size


def _header_entry_end(name: str, entry: Any) -> int:
    """Where the data of one safetensors header entry ends, or ValueError saying what is wrong with it."""
    if name == "__metadata__":
        if entry is not None and not isinstance(entry, dict):
            raise ValueError("__metadata__ is not an object")
        return 0
    if not isinstance(entry, dict):
        raise ValueError(f"entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_DTYPES:
        known = ", ".join(_SAFETENSORS_DTYPES)
        raise ValueError(f"tensor {name!r} has dtype {dtype!r}; the kit reads {known}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"tensor {name!r} has shape {shape!r}, not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    if offsets[1] - offsets[0] != math.prod(shape) * _SAFETENSORS_DTYPES[dtype].itemsize:
        raise ValueError(f"tensor {name!r}: data_offsets {offsets} do not hold a {dtype} tensor of shape {shape}")
    return offsets[1]


def _safetensors_offsets(file: Path) -> dict[str, int]:
    """Where each tensor's data starts in a safetensors file whose header `safe_open` has already accepted."""
    with open(file, "rb") as stream:
        (header_size,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(header_size))
    start = 8 + header_size
    return {name: start + entry["data_offsets"][0] for name, entry in header.items() if name != "__metadata__"}


def _load_pth(file: Path, fix: str) -> Iterator[tuple[str, LazyTensor]]:
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) serialization
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for unsafe or broken files
        raise NativeCheckpointError(
            f"{file} cannot be loaded with torch.load(weights_only=True): {str(error).splitlines()[0]}. Only files "
            f"holding a plain dict of tensors are read (arbitrary pickles could run code). {fix}"
        ) from error
    if not isinstance(state, dict):
        raise NativeCheckpointError(f"{file} holds a {type(state).__name__}, expected a dict of tensors. {fix}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise NativeCheckpointError(
                f"{file}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a flat dict of tensors. "
                f"{fix}"
            )
        yield key, LazyTensor(value, value.dtype, tuple(value.shape))


def _native_weight_files(directory: Path) -> list[Path]:
    names = sorted(path.name for path in directory.iterdir())
    safetensors = [name for name in names if _SAFETENSORS_SHARD.match(name)]
    chosen = safetensors or [name for name in names if _PTH_SHARD.match(name)]
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


# --- loading ----------------------------------------------------------------------------------------------------


def unstack_experts(native: Mapping[str, LazyTensor], config: Mapping[str, Any], source: Any) -> dict[str, LazyTensor]:
    """Split the first Mixtral release's stacked experts (`layers.N.block_sparse_moe.w1/w2/w3`, see
    `_STACKED_EXPERTS`) into per-expert tensors (`...experts.E.w1.weight`); every other tensor is kept."""
    result = {}
    for key, tensor in native.items():
        match = _STACKED_EXPERTS.fullmatch(key)
        if match is None:
            result[key] = tensor
            continue
        layer, name = match.groups()
        experts, inter, hidden = config.get("num_local_experts"), config["intermediate_size"], config["hidden_size"]
        if experts is None or tensor.shape != (experts * inter, hidden):
            planned = f"[{experts} * {inter}, {hidden}]" if experts else "a Mixtral params.json with `moe`"
            raise NativeCheckpointError(
                f"{source}: stacked expert weight {key!r} has shape {list(tensor.shape)}, expected {planned} "
                "(num_experts * hidden_dim, dim) from params.json."
            )
        for expert in range(experts):
            rows = slice(expert * inter, (expert + 1) * inter)
            part = tensor.sliced((rows,), (inter, hidden))
            if name == "w2":  # stored transposed
                part = LazyTensor(part.source, part.dtype, (hidden, inter), part.index, _transpose)
            result[f"layers.{layer}.feed_forward.experts.{expert}.{name}.weight"] = part
    return result


def _transpose(weight: torch.Tensor) -> torch.Tensor:
    return weight.t().contiguous()


def hf_tensors_from_native(
    native: Mapping[str, LazyTensor],
    config: Mapping[str, Any],
    source: Any,
    described_by: str = PARAMS_FILE,
    display: Callable[[str], str] = str,
) -> dict[str, LazyTensor]:
    """Native-named tensors under transformers names, `wq`/`wk` reordered to the rotate-half layout (lazily).

    Every key and shape is checked against `config` (a transformers config dict, as `config_dict_from_params`
    gives) first: unknown, extra and missing weights and wrong shapes raise `NativeCheckpointError` naming the weight
    (as `display(native_key)` spells it), `source` and what `described_by` should say. Mixtral experts keep their 4.x
    per-expert names (`block_sparse_moe.experts.E.w1.weight`).
    """
    count = expected_weight_count(config)
    # The table below has one entry per expected weight: bound it by what the checkpoint holds before building it.
    if count > len(native) + 16:
        raise NativeCheckpointError(
            f"{described_by} describes a model of {count} weights ({config['num_hidden_layers']} layers"
            f"{_experts_note(config)}), but {source} holds {len(native)}: check the number of layers and experts "
            "there, or re-download the checkpoint."
        )
    expected = expected_hf_shapes(config)
    unknown = [display(key) for key in native if rename_key(key, _NATIVE_TO_HF) is None]
    if unknown:
        raise NativeCheckpointError(
            f"{source}: unknown weight name(s) {_listed(unknown)}. Mistral/Mixtral native weights are "
            "tok_embeddings, norm, output and layers.N.{attention.wq/wk/wv/wo, attention_norm, ffn_norm, "
            "feed_forward.w1/w2/w3 or feed_forward.gate + feed_forward.experts.E.w1/w2/w3}; other models "
            "(vision, LoRA adapters) are not supported."
        )
    hf_tensors = {}
    for key, tensor in native.items():
        hf_key = rename_key(key, _NATIVE_TO_HF)
        if hf_key not in expected:
            raise NativeCheckpointError(
                f"{source}: weight {display(key)!r} does not fit the model {described_by} describes (check the "
                "number of layers and experts and whether embeddings are tied there)."
            )
        if tensor.shape != expected[hf_key]:
            raise NativeCheckpointError(
                f"{source}: weight {display(key)!r} has shape {list(tensor.shape)}, but {described_by} implies "
                f"{list(expected[hf_key])}: check dim, head_dim, hidden_dim, n_heads, n_kv_heads and vocab_size."
            )
        heads = _rotary_heads(hf_key, config)
        hf_tensors[hf_key] = tensor if heads is None else tensor.with_transform(_RotaryToHF(heads))
    missing = [display(rename_key(key, _HF_TO_NATIVE)) for key in expected if key not in hf_tensors]
    if missing:
        raise NativeCheckpointError(
            f"{source}: missing weight(s) {_listed(missing)} that {described_by} implies; the checkpoint is "
            "incomplete (re-download it) or its description belongs to another model."
        )
    return hf_tensors


def check_loading_info(loading_info: Mapping[str, Any], model: Any, source: Any, described_by: Any) -> None:
    """Raise unless transformers filled every weight of `model` that the checkpoint `source` has.

    A task head the checkpoint has no weights for (e.g. `score` of a sequence classifier) stays freshly initialised,
    and a base model drops `output.weight`, as with Hugging Face checkpoints.
    """
    prefix = model.base_model_prefix + "."
    is_base_model = not hasattr(model, model.base_model_prefix)
    problems = {
        "missing": sorted(
            key
            for key in loading_info.get("missing_keys", ())
            if is_base_model or key.startswith(prefix) or key == "lm_head.weight"
        ),
        "unexpected": sorted(
            key
            for key in loading_info.get("unexpected_keys", ())
            if key != "lm_head.weight" or hasattr(model, "lm_head")
        ),
        "mismatched": sorted(str(item) for item in loading_info.get("mismatched_keys", ())),
        "not converted": sorted(loading_info.get("conversion_errors", {}) or ()),
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{kind}: {', '.join(keys[:5])}" for kind, keys in problems.items())
        raise NativeCheckpointError(
            f"Loading {source} did not fill the model ({details}). The model config passed to from_pretrained must "
            f"match {described_by}."
        )


class NativeCheckpoint:
    """A validated native checkpoint directory, exposing its weights under transformers names (read lazily).

    Opening it reads `params.json` and the file headers only, and checks every key and shape against `params.json`.
    Use it as a context manager (or call `close()`) to release the memory maps.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.config = config_dict_from_params(self.directory)
        fix = f"Re-download the file into {self.directory}."
        files = _native_weight_files(self.directory)
        self._files = _TensorFiles(files, fix)  # reads and checks the headers (and file sizes) only
        try:
            _check_size(self.config, files, self.directory / PARAMS_FILE)
            self.native_tensors = unstack_experts(self._files.tensors, self.config, self.directory)
            self._hf_tensors = hf_tensors_from_native(
                self.native_tensors, self.config, self.directory, self.directory / PARAMS_FILE
            )
        except NativeCheckpointError:
            self.close()
            raise

    def hf_state_dict(self) -> dict[str, LazyTensor]:
        """Weights under transformers names (Mixtral experts per expert, 4.x names), read when first indexed."""
        return dict(self._hf_tensors)

    def check_loading_info(self, loading_info: Mapping[str, Any], model: Any) -> None:
        check_loading_info(loading_info, model, self.directory, self.directory / PARAMS_FILE)

    def apply_generation_config(self, model: Any) -> None:
        """Use the directory's `generation_config.json` when it has one (native releases usually do not)."""
        if (self.directory / "generation_config.json").is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(self.directory)

    def close(self) -> None:
        self._files.close()

    def __enter__(self) -> NativeCheckpoint:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@dataclass(frozen=True)
class _RotaryToHF:
    num_heads: int

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return rotary_to_hf(weight, self.num_heads)

    def row_order(self, rows: int) -> list[int]:
        return rotary_row_order(rows, self.num_heads, "hf")


@dataclass(frozen=True)
class _RotaryToNative:
    num_heads: int

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return rotary_to_native(weight, self.num_heads)

    def row_order(self, rows: int) -> list[int]:
        return rotary_row_order(rows, self.num_heads, "native")


# --- conversion -------------------------------------------------------------------------------------------------


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: Literal["hf", "native", "gguf"],
    dtype: Literal["f32", "f16", "bf16", "q8_0"] | None = None,
) -> Path:
    """Convert a checkpoint directory between the Hugging Face and Mistral native layouts, or to a GGUF file.

    `to="native"` reads an HF Mistral/Mixtral directory (`config.json` + safetensors, experts fused or per expert) and
    writes `params.json` + `consolidated.safetensors`; `to="hf"` reads a native directory and writes `config.json`,
    `generation_config.json` and `model.safetensors` (Mixtral experts per expert, as `save_pretrained` writes them).
    Tokenizer files are copied along. `to="gguf"` reads either layout (kit-saved folders included) and writes the
    llama.cpp file `dst` (see `hf_mistral_kit.gguf.write_gguf`) with weights in `dtype` ("f32", "f16", "bf16",
    "q8_0"; default: the checkpoint's own float type). Peak memory is about one tensor (one layer's experts for a
    Mixtral GGUF): weights are read from memory maps and written out one at a time. `dst` must not exist yet (or be an
    empty directory); it only appears once the conversion has succeeded.
    """
    src, dst = Path(src), Path(dst)
    if to == "gguf":
        from .gguf import convert_to_gguf

        return convert_to_gguf(src, dst, dtype)
    if to not in ("hf", "native"):
        raise ValueError(f"to must be 'hf', 'native' or 'gguf', got {to!r}.")
    if dtype is not None:
        raise ValueError("dtype only applies to to='gguf'; the safetensors layouts keep the weights' dtype.")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} already exists and is not empty; pick a new destination.")
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a checkpoint directory.")

    dst.parent.mkdir(parents=True, exist_ok=True)
    with removed_on_sigterm():
        staging = staging_dir(dst)
        try:
            if to == "native":
                _hf_to_native(src, staging)
            else:
                _native_to_hf(src, staging)
            _copy_tokenizer(src, staging)
            (staging / STAGING_MARKER).unlink()
            if dst.exists():
                dst.rmdir()
            staging.rename(dst)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dst


# --- staging directories and copied files -----------------------------------------------------------------------

# Written into every staging directory: which process on which host builds it, so that a later run can tell a
# directory left behind by a killed process (SIGKILL, power loss) from one still being written.
STAGING_MARKER = ".hf-mistral-kit-staging"


def staging_dir(dst: Path) -> Path:
    """A new hidden directory beside `dst` to build it in (renamed to `dst` when complete).

    Staging directories that an earlier process left beside `dst` when it was killed are removed first, with a warning.
    """
    for stale in _stale_staging_dirs(dst.parent):
        shutil.rmtree(stale, ignore_errors=True)
        warnings.warn(f"removed {stale}, left behind by an interrupted conversion or build.", stacklevel=3)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-{os.getpid()}-", dir=dst.parent))
    (staging / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    return staging


def _stale_staging_dirs(parent: Path) -> list[Path]:
    stale = []
    for path in parent.glob(".*.partial-*"):
        try:
            owner = json.loads((path / STAGING_MARKER).read_text())
            pid, host = int(owner["pid"]), owner["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or being created right now
        if host == socket.gethostname() and not _process_alive(pid):
            stale.append(path)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: leave its directory alone
    return True


@contextmanager
def removed_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises (so `except BaseException` clean-ups run) and then ends the process as the
    signal would have. Only in the main thread and when nobody else handles SIGTERM; otherwise does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # dies here, with the status a SIGTERM gives
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Terminated(BaseException):
    """SIGTERM arrived inside `removed_on_sigterm`."""


# Files a tokenizer is read from besides TOKENIZER_FILE_PATTERN's.
_TOKENIZER_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "chat_template.jinja")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """Carry the tokenizer over: a Mistral tokenizer the kit templates (SentencePiece or tekken.json) is written the
    way the kit saves tokenizers (tokenizer.json, tokenizer_config.json, chat template and Mistral's own file), so
    that every consumer reads the converted checkpoint exactly; other tokenizer files are copied as they are.
    Files the tokenizer is read from pass the same checks as copied ones."""
    from .tokenizer import kit_tokenizer_file, load_tokenizer

    files = [file for file in sorted(src.iterdir()) if TOKENIZER_FILE_PATTERN.match(file.name)]
    if kit_tokenizer_file(src) is None:
        for file in files:
            copy_from_checkpoint(src, file, dst)
        return
    for file in files + [src / name for name in _TOKENIZER_SIDE_FILES if (src / name).exists()]:
        check_checkpoint_file(src, file)
    load_tokenizer(src).save_pretrained(dst)
    for file in files:  # nothing is lost: other tokenizer files of SRC come along as they are
        if not (dst / file.name).exists():
            shutil.copy2(file, dst / file.name)


def copy_from_checkpoint(src: Path, file: Path, dst: Path) -> None:
    """Copy `file` of checkpoint `src` into `dst`, refusing what would copy something else than the checkpoint
    (`check_checkpoint_file`)."""
    check_checkpoint_file(src, file)
    shutil.copy2(file, dst / file.name)


def check_checkpoint_file(src: Path, file: Path) -> None:
    """Refuse a file of checkpoint `src` that is not part of it: non-regular files, and symbolic links that lead out
    of `src` (a Hugging Face cache snapshot's links into its repository's `blobs/` are fine)."""
    if not file.is_file():
        raise NativeCheckpointError(
            f"{file} is not a regular file (a directory, FIFO, device or broken link): remove it or replace it with "
            "the file itself."
        )
    if file.is_symlink():
        target, root = file.resolve(), src.resolve()
        allowed = [root] + ([root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [])
        if not any(target.is_relative_to(folder) for folder in allowed):
            raise NativeCheckpointError(
                f"{file} is a symbolic link to {target}, outside {src}: refusing to copy that file into the "
                "converted checkpoint (publishing it would publish the file). Replace the link with a copy of the "
                "file if it belongs to the checkpoint, or remove it."
            )


def _native_to_hf(src: Path, dst: Path) -> None:
    from transformers import GenerationConfig

    from .modeling import KitMistralConfig, KitMixtralConfig

    if native_checkpoint_dir(src) is None:
        raise NativeCheckpointError(f"{src} is not a native checkpoint (it needs {PARAMS_FILE} and no config.json).")
    with NativeCheckpoint(src) as checkpoint:
        config_class = KitMixtralConfig if checkpoint.config["model_type"] == "mixtral" else KitMistralConfig
        config = config_class.from_dict(checkpoint.config)
        tensors = checkpoint.hf_state_dict()
        config.dtype = next(iter(tensors.values())).dtype
        write_safetensors(dst / HF_SAFETENSORS, sorted(tensors.items(), key=lambda item: _natural_key(item[0])))
        config.save_pretrained(dst)  # writes the upstream model_type
        if (src / "generation_config.json").is_file():
            copy_from_checkpoint(src, src / "generation_config.json", dst)
        else:
            GenerationConfig.from_model_config(config).save_pretrained(dst)


def _hf_to_native(src: Path, dst: Path) -> None:
    from transformers import AutoConfig

    from .modeling import to_kit_config

    if not (src / "config.json").is_file():
        raise NativeCheckpointError(f"{src} is not a Hugging Face checkpoint (no config.json).")
    config = to_kit_config(AutoConfig.from_pretrained(src))
    files = _hf_weight_files(src)
    hf = _TensorFiles(files, f"Re-download the file into {src}.")
    try:
        write_native(hf.tensors, config, dst)
    finally:
        hf.close()


def write_native(hf_tensors: Mapping[str, torch.Tensor | LazyTensor], config: Any, dst: str | os.PathLike) -> None:
    """Write `params.json` + `consolidated.safetensors` into `dst` from transformers-named tensors.

    `hf_tensors` may hold tensors or `LazyTensor`s, Mixtral experts fused (5.x) or per expert (4.x); a base-model
    prefix-less or sequence-classification state dict is rejected (the native layout is a causal LM).
    """
    dst = Path(dst)
    native = native_tensors_from_hf(hf_tensors, config)
    dst.mkdir(parents=True, exist_ok=True)
    write_safetensors(dst / NATIVE_SAFETENSORS, sorted(native.items(), key=lambda item: _natural_key(item[0])))
    (dst / PARAMS_FILE).write_text(json.dumps(params_from_config(config), indent=2) + "\n")


def native_tensors_from_hf(hf_tensors: Mapping[str, torch.Tensor | LazyTensor], config: Any) -> dict[str, LazyTensor]:
    """Transformers-named tensors of a causal LM described by `config` under native names (experts per expert),
    `wq`/`wk` in Mistral's interleaved rotary layout, after checking every key and shape (lazily read)."""
    config_dict = {**config.to_dict(), "head_dim": config.head_dim}
    expected = expected_hf_shapes(config_dict)
    tensors = {key: _as_lazy(value) for key, value in hf_tensors.items() if not key.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    per_expert = _to_per_expert_names(tensors, config_dict)

    native = {}
    for key, tensor in per_expert.items():
        native_key = rename_key(key, _HF_TO_NATIVE)
        if native_key is None or key not in expected:
            raise NativeCheckpointError(
                f"Cannot export weight {key!r}: it has no place in a native {config_dict['model_type']} causal LM "
                f"({config.num_hidden_layers} layers). Only {config_dict['model_type']} causal-LM checkpoints convert."
            )
        if tensor.shape != expected[key]:
            raise NativeCheckpointError(
                f"Cannot export weight {key!r}: shape {list(tensor.shape)}, but the config implies "
                f"{list(expected[key])}."
            )
        heads = _rotary_heads(key, config_dict)
        native[native_key] = tensor if heads is None else tensor.with_transform(_RotaryToNative(heads))
    missing = [key for key in expected if key not in per_expert]
    if missing:
        raise NativeCheckpointError(f"Cannot export: the checkpoint lacks {_listed(missing)}.")
    return native


def _to_per_expert_names(tensors: dict[str, LazyTensor], config: Mapping[str, Any]) -> dict[str, LazyTensor]:
    """Rename the 5.x router and split 5.x fused experts into per-expert slices, under 4.x names."""
    result = {}
    for key, tensor in tensors.items():
        router = _HF_ROUTER.fullmatch(key)
        match = _HF_FUSED_EXPERTS.fullmatch(key)
        if router is not None:
            result[f"model.layers.{router.group(1)}.block_sparse_moe.gate.weight"] = tensor
            continue
        if match is None:
            result[key] = tensor
            continue
        layer, fused = match.groups()
        parts = _FUSED_PARTS[fused]
        experts, rows, cols = tensor.shape if len(tensor.shape) == 3 else (None, None, None)
        if experts != config.get("num_local_experts") or rows % len(parts):
            raise NativeCheckpointError(f"Cannot export weight {key!r}: unexpected shape {list(tensor.shape)}.")
        part_rows = rows // len(parts)
        for expert in range(experts):
            for i, name in enumerate(parts):
                index = (expert, slice(i * part_rows, (i + 1) * part_rows))
                result[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{name}.weight"] = LazyTensor(
                    tensor.source, tensor.dtype, (part_rows, cols), index
                )
    return result


def _as_lazy(value: torch.Tensor | LazyTensor) -> LazyTensor:
    if isinstance(value, LazyTensor):
        return value
    return LazyTensor(value, value.dtype, tuple(value.shape))


def _hf_weight_files(directory: Path) -> list[Path]:
    index = directory / f"{HF_SAFETENSORS}.index.json"
    if index.is_file():
        return [directory / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    # Repositories shipping both layouts also hold consolidated*.safetensors: those are not HF weights.
    files = sorted(path for path in directory.glob("*.safetensors") if not _SAFETENSORS_SHARD.match(path.name))
    if not files:
        raise NativeCheckpointError(
            f"{directory} has no safetensors weights; re-save it with `save_pretrained` (safetensors is the default)."
        )
    return files


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def write_safetensors(path: str | os.PathLike, tensors: list[tuple[str, LazyTensor]]) -> None:
    """Write a safetensors file one tensor at a time (the safetensors API needs every tensor in memory at once).

    The header is computed from the planned dtypes and shapes first; each tensor is then read, checked against its
    plan and appended. The result is a standard safetensors file (little-endian, `format: pt` metadata).
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; writing them on a big-endian machine is unsupported.")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors:
        size = math.prod(tensor.shape) * tensor.dtype.itemsize
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    # A progress bar in bytes (transformers' tqdm: `transformers.utils.logging.disable_progress_bar()` hides it).
    progress = tqdm(total=offset, unit="B", unit_scale=True, desc=f"Writing {Path(path).name}")
    with open(path, "wb") as stream, progress:
        stream.write(struct.pack("<Q", len(encoded)))
        stream.write(encoded)
        for name, lazy in tensors:
            tensor = lazy.read()
            if tensor.dtype != lazy.dtype or tuple(tensor.shape) != lazy.shape:
                raise NativeCheckpointError(
                    f"{name}: read {tensor.dtype} {list(tensor.shape)}, planned {lazy.dtype} {list(lazy.shape)}."
                )
            stream.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
            progress.update(tensor.numel() * tensor.element_size())
