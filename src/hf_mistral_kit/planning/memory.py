"""How much memory a model of the Mistral family needs in a given preset, from its config alone (no weights).

Parameter counts are closed-form from the config, through the tensor table (`formats.names`), layer by layer (dense
and MoE layers, latent attention and the Large line's NoPE, KV-sharing and index-sharing layers); a vision-language
wrapper (mistral3, the Large line) is planned as its text model, what a causal LM of it loads, or with `vision=True`
as the whole model. Quantized sizes follow bitsandbytes' storage exactly (NF4: two weights per byte plus one absmax
per 64-weight block, itself 8-bit with double quantization; LLM.int8: one byte per weight plus one float32 scale per
output row). bitsandbytes quantizes the decoder's linear layers only (attention, MLP, shared experts, and routed
experts as the kit builds them, one linear triple per expert): embeddings, `lm_head`, norms, routers, the Large line's
indexer and scales and any vision tower stay in the compute dtype (the Large line's router and rotary `alpha` in
float32, as transformers keeps them).

The KV cache is what transformers' cache allocates per token, summed over the layers: K and V of the key/value heads
(grouped-query attention); the compressed latent and the rotary key for latent attention (Mistral 4 in transformers
5.2x and the Large line; transformers 5.10 caches Mistral 4's expanded per-head K and V instead: `latent_kv_cache`),
plus the indexer's keys in the Large line's layers that have an indexer, nothing for a layer that reuses an earlier
layer's KV and index. Sliding-window layers keep `sliding_window - 1` tokens (transformers' sliding cache; mistral and
mixtral are planned with the whole window, as the kit always has: one token more). Vision tokens are prompt tokens
like any other: count them in `context_length`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..architectures import MODEL_TYPES, find_architecture
from ..formats import names
from ..formats.hyperparameters import check_config, check_present, head_dim, text_config_dict
from . import DEFAULT_CONTEXT_LENGTH
from .hardware import GiB, Hardware

__all__ = ["MemoryPlan", "ModelShape"]

NF4_BLOCKSIZE = 64  # weights per absmax (bitsandbytes' 4-bit default, not configurable through transformers)
NESTED_BLOCKSIZE = 256  # absmax values per float32 scale with double quantization
NF4_TABLE_BYTES = 16 * 4  # the 16-entry float32 NF4 code table stored with every weight
NESTED_TABLE_BYTES = 256 * 4 + 4  # the 8-bit code table and offset for the quantized absmax
FLOAT32_BYTES = 4

# Peak bytes beyond weights, KV cache and activations: cuBLAS/attention workspaces and allocator slack on a GPU;
# the Python/torch runtime on a CPU.
CUDA_OVERHEAD_BYTES = 512 * 2**20
CPU_OVERHEAD_BYTES = 1 * GiB

# Model types whose sliding-window layers are planned with the whole window (the kit's figure since it planned only
# these; transformers 5.x keeps `sliding_window - 1` tokens, which every other architecture is planned with).
WHOLE_WINDOW_MODEL_TYPES = (None, "mistral", "mixtral")


def default_context_length(shape: ModelShape) -> int:
    """The context planned for when none is given: DEFAULT_CONTEXT_LENGTH, or the model's whole window if shorter."""
    return min(DEFAULT_CONTEXT_LENGTH, shape.max_position_embeddings or DEFAULT_CONTEXT_LENGTH)


@functools.cache
def mistral4_caches_latent() -> bool:
    """Whether the installed transformers caches Mistral 4's compressed KV latent and rotary key (5.2x: its attention
    expands them per head after the cache read, `Mistral4Attention.expand_kv`) rather than the expanded per-head keys
    and values (5.10). Without transformers' Mistral 4, the newer behaviour is assumed."""
    try:
        from transformers.models.mistral4 import modeling_mistral4
    except ImportError:
        return True
    return hasattr(modeling_mistral4.Mistral4Attention, "expand_kv")


def _complete(config: dict[str, Any], source: Any) -> dict[str, Any]:
    """A config dict of an architecture newer than Mistral/Mixtral completed by transformers' own config class (its
    defaults and derived per-layer lists: ministral's `layer_types`, the Large line's NoPE, KV-sharing and indexer
    layers), when the installed transformers has it; else as given."""
    model_type = config.get("model_type")
    text = isinstance(model_type, str) and model_type.endswith("_text")  # the Large line's text config
    row = find_architecture(model_type.removesuffix("_text") if text else model_type)
    if row is None or row.model_type in ("mistral", "mixtral"):
        return config
    model_type = row.model_type + ("_text" if text else "")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        return config
    from transformers import AutoConfig

    given = {key: value for key, value in config.items() if key not in ("model_type", "_name_or_path")}
    try:
        built = AutoConfig.for_model(model_type, **given)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{source}: transformers refuses this {model_type} config: {error}") from None
    complete = built.to_dict()
    if getattr(built, "head_dim", None) is not None:
        complete["head_dim"] = built.head_dim
    if config.get("_name_or_path"):
        complete["_name_or_path"] = config["_name_or_path"]
    return complete


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Mistral-family config that decide its size. `num_experts == 0` means a dense MLP. `config`
    is the (text) config dict the tensor table sizes every layer from; `latent_kv_cache` says how latent attention's
    cache is laid out (`mistral4_caches_latent`)."""

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
    config: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    latent_kv_cache: bool = True

    @classmethod
    def from_config(cls, config: Any, *, mistral_only: bool = False, vision: bool | None = False) -> ModelShape:
        """From a `PretrainedConfig`, a config dict (HF `config.json` or Mistral's native `params.json`), a path to
        either file, to a GGUF file or to a checkpoint directory holding one, or a Hub model id.

        A vision-language wrapper (mistral3, mistral_large4) is planned as its text model (what a causal LM of it
        loads), or with `vision` as the whole model (vision tower and projector in the compute dtype); `vision=None`
        plans what the kit's `AutoModelForCausalLM` loads: the whole model of a wrapper without a text-only class
        (mistral_large4), the text model of the others.
        The numbers are validated first (`formats.hyperparameters`): a ValueError names the field that is wrong. With
        `mistral_only`, configs of other model types (llama, ...) are refused too.
        """
        if isinstance(config, ModelShape):
            return config
        if isinstance(config, (str, os.PathLike)):
            return cls.from_config(_read_config_file(os.fspath(config)), mistral_only=mistral_only, vision=vision)
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
        text_type = model_type.removesuffix("_text") if isinstance(model_type, str) else model_type
        if mistral_only and model_type is not None and text_type not in MODEL_TYPES:
            raise ValueError(
                f"{source} is a {model_type!r} config, not a Mistral/Mixtral one: hf-mistral-kit plans and loads the "
                "Mistral family (model types mistral, mixtral, ministral, ministral3, mistral3, mistral4 and "
                "mistral_large4, or Mistral's params.json)."
            )
        wrapper = find_architecture(model_type)
        if vision is None:
            vision = wrapper is not None and wrapper.vision and wrapper.text_model_type is not None
        if vision and (wrapper is None or not wrapper.vision):
            raise ValueError(f"{source} is not a vision-language model: plan it without vision=True.")
        check_present(config, source)
        config = _complete(dict(config), source)
        text = text_config_dict(config, vision=vision, source=source)
        check_config(text, source)
        hidden = text["hidden_size"]
        heads = text["num_attention_heads"]
        layout = names.layout(text)
        name = config.get("_name_or_path") or config.get("model_type") or "model"
        if wrapper is not None and wrapper.vision and not vision:
            name = f"{name} (text model)"
        return cls(
            name=name,
            vocab_size=text["vocab_size"],
            hidden_size=hidden,
            intermediate_size=text["intermediate_size"],
            num_layers=text["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=text.get("num_key_value_heads") or heads,
            head_dim=head_dim(text),
            num_experts=names.experts_count(text),
            experts_per_token=text.get("num_experts_per_tok") or 0,
            tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
            sliding_window=text.get("sliding_window"),
            max_position_embeddings=text.get("max_position_embeddings"),
            config=text,
            latent_kv_cache=layout != names.MISTRAL4_LAYOUT or mistral4_caches_latent(),
        )

    def labelled(self, name: str) -> ModelShape:
        """The same shape under another name (what tables and messages call the model)."""
        return dataclasses.replace(self, name=name)

    def config_dict(self) -> dict[str, Any]:
        """The shape as a transformers config dict (what the tensor table, `formats.names`, sizes tensors from)."""
        if self.config is not None:
            return dict(self.config)
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
            "sliding_window": self.sliding_window,
        }

    def layers(self) -> list[names.Layer]:
        """What each decoder layer holds and caches (`formats.names.layer_kinds`)."""
        return names.layer_kinds(self.config_dict())

    def linear_shapes(self, layer: names.Layer | None = None) -> list[tuple[int, int, int]]:
        """(out_features, in_features, count) of one decoder layer's linear weights (of kind `layer`; by default the
        most common kind): what bitsandbytes quantizes."""
        return names.layer_linear_shapes(self.config_dict(), layer)

    def layer_unquantized_parameters(self, layer: names.Layer | None = None) -> int:
        """Parameters of one decoder layer that stay unquantized: norms, the MoE router, the Large line's indexer and
        softmax scaling."""
        return names.layer_parameters(self.config_dict(), linear=False, layer=layer)

    def embedding_parameters(self) -> int:
        """Token embeddings, `lm_head` (unless tied), the final norm (and the rotary `alpha`, a vision tower and its
        projector where planned): always in the compute dtype (`alpha` in float32)."""
        return names.model_parameters(self.config_dict())

    def embedding_bytes(self, dtype_bytes: int) -> int:
        """Bytes of `embedding_parameters` as loaded."""
        config = self.config_dict()
        kept = names.model_parameters(config, float32=True)
        return names.model_parameters(config, float32=False) * dtype_bytes + kept * FLOAT32_BYTES

    def parameter_count(self) -> int:
        return names.parameter_count(self.config_dict())

    def layer_kv_bytes_per_token(self, layer: names.Layer, dtype_bytes: int) -> int:
        """Bytes one decoder layer's cache holds per token."""
        config = self.config_dict()
        if layer.attention == names.GQA:
            return self.num_kv_heads * self.head_dim * 2 * dtype_bytes
        rope = config["qk_rope_head_dim"]
        if not self.latent_kv_cache:  # per-head keys (nope + rope) and values
            return self.num_heads * (config["qk_nope_head_dim"] + rope + config["v_head_dim"]) * dtype_bytes
        latent = config["kv_lora_rank"] + (rope if layer.rope else 0) if layer.own_kv else 0
        indexer_keys = config["index_head_dim"] if layer.indexer else 0
        return (latent + indexer_keys) * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes the KV cache grows by per token (before any sliding window is full)."""
        return sum(count * self.layer_kv_bytes_per_token(layer, dtype_bytes) for layer, count in self._groups())

    def kv_cache_bytes(self, context_length: int, batch_size: int, dtype_bytes: int) -> int:
        """Bytes of the KV cache after `context_length` tokens of each of `batch_size` sequences: sliding-window
        layers keep the window only."""
        window = self.sliding_window
        if window is not None and self.config_dict().get("model_type") not in WHOLE_WINDOW_MODEL_TYPES:
            window -= 1
        total = 0
        for layer, count in self._groups():
            tokens = min(context_length, window) if layer.sliding and window is not None else context_length
            total += count * tokens * self.layer_kv_bytes_per_token(layer, dtype_bytes)
        return batch_size * total

    def _groups(self) -> list[tuple[names.Layer, int]]:
        return names.layer_groups(self.config_dict())

    def layer_bytes(
        self, quantization: str | None, double_quant: bool, dtype_bytes: int, layer: names.Layer | None = None
    ) -> int:
        """Bytes of one decoder layer (of kind `layer`; by default the most common kind) stored as bitsandbytes
        stores it."""
        config = self.config_dict()
        linear = sum(
            count * linear_bytes(out, inp, quantization, double_quant, dtype_bytes)
            for out, inp, count in names.layer_linear_shapes(config, layer)
        )
        kept = names.layer_parameters(config, linear=False, layer=layer, float32=True)
        rest = names.layer_parameters(config, linear=False, layer=layer, float32=False)
        return linear + rest * dtype_bytes + kept * FLOAT32_BYTES

    def each_layer_bytes(self, quantization: str | None, double_quant: bool, dtype_bytes: int) -> list[int]:
        """`layer_bytes` of every decoder layer, in order."""
        sizes = {layer: self.layer_bytes(quantization, double_quant, dtype_bytes, layer) for layer, _ in self._groups()}
        return [sizes[layer] for layer in self.layers()]


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
    offloaded_device_bytes: int | None = None  # what the offloaded layers would take on the device (layers differ)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def device_bytes(self) -> int:
        """What must fit on the device (GPU, or RAM on CPU) after offloading."""
        offloaded = self.offloaded_device_bytes
        return self.total_bytes - (self.offloaded_layers * self.layer_bytes if offloaded is None else offloaded)

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
    each_layer = shape.each_layer_bytes(quantization, double_quant, dtype_bytes)
    weights = shape.embedding_bytes(dtype_bytes) + sum(each_layer)
    kv_cache = shape.kv_cache_bytes(context_length, batch_size, dtype_bytes)
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
    # device_map="auto" fills the GPU with the first layers and offloads the rest.
    spare = hardware.free_memory - (plan.total_bytes - sum(each_layer))
    on_gpu = 0
    while on_gpu < shape.num_layers and each_layer[on_gpu] <= spare:
        spare -= each_layer[on_gpu]
        on_gpu += 1
    unquantized = shape.each_layer_bytes(None, False, dtype_bytes)[on_gpu:]
    return dataclasses.replace(
        plan,
        offloaded_layers=shape.num_layers - on_gpu,
        offloaded_bytes=sum(unquantized),
        offloaded_device_bytes=sum(each_layer[on_gpu:]),
    )


def _activation_bytes(shape: ModelShape, tokens: int, batch_size: int, dtype_bytes: int) -> int:
    """Peak transient memory while prefilling all tokens in one pass (an estimate): one decoder layer's hidden
    states, its attention inputs (q/k/v; for latent attention the queries, the latent and the per-head keys and values
    it expands to, and the Large line's indexer queries) and MLP intermediates (top-k experts, and the shared experts,
    for MoE; the widest layer's), plus float32 logits for the last position."""
    config = shape.config_dict()
    if names.layout(config) == names.GQA_LAYOUT:
        experts = shape.experts_per_token or 1
        q_kv = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
        per_token = 2 * shape.hidden_size + q_kv + 3 * experts * shape.intermediate_size
        return tokens * per_token * dtype_bytes + batch_size * shape.vocab_size * 4
    sizes = names.dimensions(config)
    qk = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    attention = sizes["q_heads"] + sizes["kv_a"] + shape.num_heads * (qk + config["v_head_dim"]) + sizes["index_q"]
    mlp = max(
        3 * (shape.experts_per_token * sizes["moe_inter"] + sizes["shared_inter"])
        if layer.mlp == names.MOE
        else 3 * shape.intermediate_size
        for layer, _ in names.layer_groups(config)
    )
    per_token = 2 * shape.hidden_size + attention + mlp
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
