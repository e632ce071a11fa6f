"""How much memory a Mistral/Mixtral model needs in a given preset, from its config alone (no weights).

Parameter counts are closed-form from the config; quantized sizes follow bitsandbytes' storage exactly (NF4: two
weights per byte plus one absmax per 64-weight block, itself 8-bit with double quantization; LLM.int8: one byte per
weight plus one float32 scale per output row). bitsandbytes quantizes the decoder's linear layers only: embeddings,
`lm_head`, norms and the Mixtral router stay in the compute dtype. The KV cache is
layers x kv heads x head_dim x 2 (K and V) x dtype bytes per token, capped by the sliding window when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..architectures import MODEL_TYPES
from ..formats import names
from ..formats.hyperparameters import check_config, head_dim
from . import DEFAULT_CONTEXT_LENGTH
from .hardware import GiB, Hardware

__all__ = ["MemoryPlan", "ModelShape"]

NF4_BLOCKSIZE = 64  # weights per absmax (bitsandbytes' 4-bit default, not configurable through transformers)
NESTED_BLOCKSIZE = 256  # absmax values per float32 scale with double quantization
NF4_TABLE_BYTES = 16 * 4  # the 16-entry float32 NF4 code table stored with every weight
NESTED_TABLE_BYTES = 256 * 4 + 4  # the 8-bit code table and offset for the quantized absmax

# Peak bytes beyond weights, KV cache and activations: cuBLAS/attention workspaces and allocator slack on a GPU;
# the Python/torch runtime on a CPU.
CUDA_OVERHEAD_BYTES = 512 * 2**20
CPU_OVERHEAD_BYTES = 1 * GiB


def default_context_length(shape: ModelShape) -> int:
    """The context planned for when none is given: DEFAULT_CONTEXT_LENGTH, or the model's whole window if shorter."""
    return min(DEFAULT_CONTEXT_LENGTH, shape.max_position_embeddings or DEFAULT_CONTEXT_LENGTH)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Mistral-family config that decide its size. `num_experts == 0` means a dense MLP."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int = 0
    experts_per_token: int = 0
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    max_position_embeddings: int | None = None

    @classmethod
    def from_config(cls, config: Any, *, mistral_only: bool = False) -> ModelShape:
        """From a `PretrainedConfig`, a config dict (HF `config.json` or Mistral's native `params.json`), a path to
        either file, to a GGUF file or to a checkpoint directory holding one, or a Hub model id.

        The numbers are validated first (`formats.hyperparameters`): a ValueError names the field that is wrong. With
        `mistral_only`, configs of other model types (llama, ...) are refused too.
        """
        if isinstance(config, ModelShape):
            return config
        if isinstance(config, (str, os.PathLike)):
            return cls.from_config(_read_config_file(os.fspath(config)), mistral_only=mistral_only)
        if not isinstance(config, Mapping):
            if not hasattr(config, "to_dict"):
                raise TypeError(f"expected a PretrainedConfig, a config dict or a path, got {type(config).__name__}")
            config = {**config.to_dict(), "head_dim": getattr(config, "head_dim", None)}
        source = config.get("_name_or_path") or "the config"
        if "dim" in config and "n_layers" in config:  # Mistral's native params.json
            from ..formats.native import config_dict_from_params_dict

            name = config.get("_name_or_path", "mistral (params.json)")
            config = {**config_dict_from_params_dict(dict(config), source=name), "_name_or_path": name}
        model_type = config.get("model_type")
        if mistral_only and model_type is not None and model_type not in MODEL_TYPES:
            raise ValueError(
                f"{source} is a {model_type!r} config, not a Mistral/Mixtral one: hf-mistral-kit plans and loads the "
                "Mistral family (model_type mistral or mixtral, or Mistral's params.json)."
            )
        check_config(config, source)
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        return cls(
            name=config.get("_name_or_path") or config.get("model_type") or "model",
            vocab_size=config["vocab_size"],
            hidden_size=hidden,
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=head_dim(config),
            num_experts=config.get("num_local_experts") or 0,
            experts_per_token=config.get("num_experts_per_tok") or 0,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            sliding_window=config.get("sliding_window"),
            max_position_embeddings=config.get("max_position_embeddings"),
        )

    def labelled(self, name: str) -> ModelShape:
        """The same shape under another name (what tables and messages call the model)."""
        return dataclasses.replace(self, name=name)

    def config_dict(self) -> dict[str, Any]:
        """The shape as a transformers config dict (what the tensor table, `formats.names`, sizes tensors from)."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "num_local_experts": self.num_experts or None,
            "tie_word_embeddings": self.tie_word_embeddings,
        }

    def linear_shapes(self) -> list[tuple[int, int, int]]:
        """(out_features, in_features, count) of one decoder layer's linear weights: what bitsandbytes quantizes."""
        return names.layer_linear_shapes(self.config_dict())

    def layer_unquantized_parameters(self) -> int:
        """Parameters of one decoder layer that stay unquantized: two RMSNorms and the MoE router."""
        return names.layer_parameters(self.config_dict(), linear=False)

    def embedding_parameters(self) -> int:
        """Token embeddings, `lm_head` (unless tied) and the final norm: always in the compute dtype."""
        return names.model_parameters(self.config_dict())

    def parameter_count(self) -> int:
        return names.parameter_count(self.config_dict())

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return self.num_layers * self.num_kv_heads * self.head_dim * 2 * dtype_bytes

    def layer_bytes(self, quantization: str | None, double_quant: bool, dtype_bytes: int) -> int:
        """Bytes of one decoder layer stored as bitsandbytes stores it."""
        linear = sum(
            count * linear_bytes(out, inp, quantization, double_quant, dtype_bytes)
            for out, inp, count in self.linear_shapes()
        )
        return linear + self.layer_unquantized_parameters() * dtype_bytes


def linear_bytes(out: int, inp: int, quantization: str | None, double_quant: bool, dtype_bytes: int) -> int:
    n = out * inp
    if quantization is None:
        return n * dtype_bytes
    if quantization == "int8":
        return n + out * 4  # int8 weight + float32 row scale (SCB)
    if quantization == "nf4":
        blocks = math.ceil(n / NF4_BLOCKSIZE)
        if not double_quant:
            return math.ceil(n / 2) + blocks * 4 + NF4_TABLE_BYTES
        return (
            math.ceil(n / 2) + blocks + math.ceil(blocks / NESTED_BLOCKSIZE) * 4 + NF4_TABLE_BYTES + NESTED_TABLE_BYTES
        )
    raise ValueError(f"unknown quantization {quantization!r}; expected None, 'int8' or 'nf4'")


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a model needs in one preset. `fits` is None without a `Hardware` to check against.

    With CPU offload (`offloaded_layers > 0`), those decoder layers live in CPU RAM unquantized
    (`offloaded_bytes`) and the rest of `total_bytes` must fit the device.
    """

    model: str
    preset: str
    weight_format: str
    parameters: int
    context_length: int
    batch_size: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int
    hardware: Hardware | None = None
    on_cpu: bool = False
    offloaded_layers: int = 0
    offloaded_bytes: int = 0
    layer_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def device_bytes(self) -> int:
        """What must fit on the device (GPU, or RAM on CPU) after offloading."""
        return self.total_bytes - self.offloaded_layers * self.layer_bytes

    @property
    def available_bytes(self) -> int | None:
        """Free memory where the model runs: the GPU's, or RAM for a CPU plan."""
        if self.hardware is None:
            return None
        return self.hardware.cpu_memory if self.on_cpu else self.hardware.free_memory

    @property
    def fits(self) -> bool | None:
        if self.hardware is None:
            return None
        return self.device_bytes <= self.available_bytes and self.offloaded_bytes <= _offload_budget(self.hardware)

    @property
    def placement(self) -> str | None:
        """Where the weights live: "gpu", "gpu+cpu" (decoder layers offloaded to CPU RAM) or "cpu" (None without
        hardware)."""
        if self.hardware is None:
            return None
        if self.on_cpu or not self.hardware.cuda:
            return "cpu"
        return "gpu+cpu" if self.offloaded_layers else "gpu"

    @property
    def placement_text(self) -> str:
        """`placement` in words, e.g. "on Tesla T4 (...)" or "in CPU RAM (the model runs on the CPU; ...)"."""
        hardware = self.hardware
        if hardware is None:
            return "(no hardware given)"
        if self.placement == "cpu":
            if hardware.cuda:
                return (
                    f"in CPU RAM ({hardware.cpu_memory / GiB:.1f} GiB free): the model runs on the CPU, not on "
                    f"{hardware.device_name}"
                )
            return f"in the RAM of {hardware.describe()}"
        if self.placement == "gpu+cpu":
            return (
                f"on {hardware.describe()}, with {self.offloaded_layers} decoder layers offloaded to CPU RAM "
                f"({self.offloaded_bytes / GiB:.1f} GiB, streamed in for every token)"
            )
        return f"on {hardware.describe()}"

    def __str__(self) -> str:
        rows = [
            ("weights", self.weights_bytes),
            ("KV cache", self.kv_cache_bytes),
            ("activations (est.)", self.activation_bytes),
            ("overhead (est.)", self.overhead_bytes),
            ("total", self.total_bytes),
        ]
        if self.offloaded_layers:
            rows += [
                (f"on device ({self.offloaded_layers} layers offloaded)", self.device_bytes),
                ("offloaded to CPU RAM", self.offloaded_bytes),
            ]
        if self.hardware is not None:
            rows.append(("available", self.available_bytes))
        width = max(len(label) for label, _ in rows)
        lines = [
            f"{self.model}: {_count(self.parameters)} parameters, preset {self.preset!r} ({self.weight_format}), "
            f"{self.context_length} tokens x batch {self.batch_size}",
            f"{'':{width}}  {'GB':>9}  {'GiB':>9}",
        ]
        lines += [f"{label:{width}}  {value / 1e9:9.2f}  {value / GiB:9.2f}" for label, value in rows]
        if self.hardware is not None:
            lines.append(f"{'fits':{width}}  {'yes' if self.fits else 'no'} {self.placement_text}")
        return "\n".join(lines)


def estimate(
    shape: ModelShape,
    *,
    preset: str,
    weight_format: str,
    quantization: str | None,
    double_quant: bool,
    dtype_bytes: int,
    context_length: int,
    batch_size: int = 1,
    hardware: Hardware | None = None,
    on_cpu: bool = False,
    offload: bool = False,
) -> MemoryPlan:
    """The plan for one concrete format. With `offload`, as many decoder layers as fit stay on the GPU and the rest
    go to CPU RAM unquantized (what `device_map="auto"` does with bitsandbytes' CPU offload)."""
    layer_bytes = shape.layer_bytes(quantization, double_quant, dtype_bytes)
    weights = shape.embedding_parameters() * dtype_bytes + shape.num_layers * layer_bytes
    cached_tokens = min(context_length, shape.sliding_window or context_length)
    kv_cache = batch_size * cached_tokens * shape.kv_bytes_per_token(dtype_bytes)
    plan = MemoryPlan(
        model=shape.name,
        preset=preset,
        weight_format=weight_format,
        parameters=shape.parameter_count(),
        context_length=context_length,
        batch_size=batch_size,
        weights_bytes=weights,
        kv_cache_bytes=kv_cache,
        activation_bytes=_activation_bytes(shape, context_length * batch_size, batch_size, dtype_bytes),
        overhead_bytes=CPU_OVERHEAD_BYTES if on_cpu else CUDA_OVERHEAD_BYTES,
        hardware=hardware,
        on_cpu=on_cpu,
        layer_bytes=layer_bytes,
    )
    if not offload or hardware is None:
        return plan
    spare = hardware.free_memory - (plan.total_bytes - shape.num_layers * layer_bytes)
    on_gpu = max(0, min(shape.num_layers, spare // layer_bytes))
    offloaded = shape.num_layers - on_gpu
    unquantized_layer = shape.layer_bytes(None, False, dtype_bytes)
    return dataclasses.replace(plan, offloaded_layers=offloaded, offloaded_bytes=offloaded * unquantized_layer)


def _activation_bytes(shape: ModelShape, tokens: int, batch_size: int, dtype_bytes: int) -> int:
    """Peak transient memory while prefilling all tokens in one pass (an estimate): one decoder layer's hidden
    states, q/k/v and MLP intermediates (top-k experts for MoE), plus float32 logits for the last position."""
    experts = shape.experts_per_token or 1
    q_kv = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    per_token = 2 * shape.hidden_size + q_kv + 3 * experts * shape.intermediate_size
    return tokens * per_token * dtype_bytes + batch_size * shape.vocab_size * 4


def _offload_budget(hardware: Hardware) -> int:
    """CPU RAM usable for offloaded weights: what is free, minus the runtime itself."""
    return hardware.cpu_memory - CPU_OVERHEAD_BYTES


# A config.json is a few KiB: anything far larger is not one (and is not read into memory).
MAX_CONFIG_BYTES = 16 * 2**20


def _read_config_file(path: str) -> dict:
    """The config dict of a checkpoint directory, config file, GGUF file or Hub id, named after `path` as given."""
    name = path
    if os.path.isfile(path) and not path.endswith(".json"):  # the GGUF reader (and torch) only for what may be one
        from ..formats.dispatch import find_checkpoint

        source = find_checkpoint(path)
        if source is not None:
            return {**source.config_dict(), "_name_or_path": os.path.basename(path)}
    if not os.path.exists(path):
        from transformers import AutoConfig  # a Hub id: fetch its config.json only

        config = AutoConfig.from_pretrained(path)
        return {**config.to_dict(), "head_dim": getattr(config, "head_dim", None), "_name_or_path": name}
    if os.path.isdir(path):
        from ..formats.native import DESCRIPTION_FILES

        for filename in DESCRIPTION_FILES:
            candidate = os.path.join(path, filename)
            if os.path.isfile(candidate):
                path = candidate
                break
        else:
            raise FileNotFoundError(f"{path} has neither config.json nor params.json")
    if not os.path.isfile(path):  # a FIFO would block the read, a device never ends
        raise ValueError(f"{path} is not a regular file; expected a config.json or params.json.")
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES // 2**20} MiB, which no config is")
        config = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} is not a readable JSON config: {error}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not a config object (config.json/params.json).")
    return {**config, "_name_or_path": name}


def _count(parameters: int) -> str:
    """7.24B, 4.3M, 512K: a parameter count at the scale it is read at."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.2f}{suffix}"
    return str(parameters)
