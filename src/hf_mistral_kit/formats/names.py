"""Every tensor of a Mistral-family checkpoint: ONE table, a row per tensor, in every spelling the kit reads or writes.

A row names one tensor in Mistral's native layout (mistral-inference's names), in transformers' layout (the 4.x
per-expert names for Mixtral, which the kit's loader and transformers' conversion mapping both know) and in
llama.cpp's GGUF layout, with its shape and how its rows are laid out (`rotary`: `wq`/`wk` are stored in Mistral's
interleaved rotary order natively and in GGUF, in rotate-half order by transformers). Everything else is derived:
the renames in each direction, the expected shapes of a config, the weight and parameter counts, what bitsandbytes
quantizes and what GGUF keeps in float32, the stacked and fused layouts of the experts. A new architecture's tensors
are rows here.

`{layer}` and `{expert}` in a name stand for the layer and expert numbers. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .hyperparameters import head_dim

# Roles: what the tensor is, which decides how it is stored.
EMBEDDING, HEAD, NORM, ATTENTION, MLP, ROUTER, EXPERT = (
    "embedding",
    "head",
    "norm",
    "attention",
    "mlp",
    "router",
    "expert",
)
# Decoder-layer linear weights: what bitsandbytes quantizes (everything else stays in the compute dtype).
LINEAR_ROLES = (ATTENTION, MLP, EXPERT)
# What llama.cpp's converter keeps in float32 whatever the file type (as the kit's writer does).
F32_ROLES = (NORM, ROUTER)


@dataclass(frozen=True)
class Tensor:
    native: str  # mistral-inference's name
    hf: str  # transformers' name (4.x per-expert names for experts)
    gguf: str  # llama.cpp's name (one tensor per expert: its first Mixtral files)
    shape: tuple[str, ...]  # dimensions, named as in `dimensions()`
    role: str
    rotary: str | None = None  # the config field counting the heads of rows stored in interleaved rotary order
    native_also: tuple[str, ...] = ()  # other native names read (the first Mixtral release's)
    hf_also: tuple[str, ...] = ()  # other transformers names read (transformers 5.x's)
    gguf_stacked: str | None = None  # llama.cpp's current files: every expert of a layer in one [experts, ...] tensor
    native_stacked: str | None = None  # the first Mixtral release: experts stacked along the rows, no `.weight`
    hf_fused: str | None = None  # transformers 5.x: the experts fused into one [experts, parts * rows, cols] tensor


_L, _E = "model.layers.{layer}.", "model.layers.{layer}.block_sparse_moe.experts.{expert}."
TENSORS: tuple[Tensor, ...] = (
    Tensor("tok_embeddings.weight", "model.embed_tokens.weight", "token_embd.weight", ("vocab", "hidden"), EMBEDDING),
    Tensor("norm.weight", "model.norm.weight", "output_norm.weight", ("hidden",), NORM),
    Tensor("output.weight", "lm_head.weight", "output.weight", ("vocab", "hidden"), HEAD),
    Tensor(
        "layers.{layer}.attention.wq.weight",
        _L + "self_attn.q_proj.weight",
        "blk.{layer}.attn_q.weight",
        ("q", "hidden"),
        ATTENTION,
        rotary="num_attention_heads",
    ),
    Tensor(
        "layers.{layer}.attention.wk.weight",
        _L + "self_attn.k_proj.weight",
        "blk.{layer}.attn_k.weight",
        ("kv", "hidden"),
        ATTENTION,
        rotary="num_key_value_heads",
    ),
    Tensor(
        "layers.{layer}.attention.wv.weight",
        _L + "self_attn.v_proj.weight",
        "blk.{layer}.attn_v.weight",
        ("kv", "hidden"),
        ATTENTION,
    ),
    Tensor(
        "layers.{layer}.attention.wo.weight",
        _L + "self_attn.o_proj.weight",
        "blk.{layer}.attn_output.weight",
        ("hidden", "q"),
        ATTENTION,
    ),
    Tensor(
        "layers.{layer}.attention_norm.weight",
        _L + "input_layernorm.weight",
        "blk.{layer}.attn_norm.weight",
        ("hidden",),
        NORM,
    ),
    Tensor(
        "layers.{layer}.ffn_norm.weight",
        _L + "post_attention_layernorm.weight",
        "blk.{layer}.ffn_norm.weight",
        ("hidden",),
        NORM,
    ),
    # A dense MLP (Mistral).
    Tensor(
        "layers.{layer}.feed_forward.w1.weight",
        _L + "mlp.gate_proj.weight",
        "blk.{layer}.ffn_gate.weight",
        ("inter", "hidden"),
        MLP,
    ),
    Tensor(
        "layers.{layer}.feed_forward.w2.weight",
        _L + "mlp.down_proj.weight",
        "blk.{layer}.ffn_down.weight",
        ("hidden", "inter"),
        MLP,
    ),
    Tensor(
        "layers.{layer}.feed_forward.w3.weight",
        _L + "mlp.up_proj.weight",
        "blk.{layer}.ffn_up.weight",
        ("inter", "hidden"),
        MLP,
    ),
    # A mixture of experts (Mixtral): the router, and each expert's w1/w2/w3.
    Tensor(
        "layers.{layer}.feed_forward.gate.weight",
        _L + "block_sparse_moe.gate.weight",
        "blk.{layer}.ffn_gate_inp.weight",
        ("experts", "hidden"),
        ROUTER,
        native_also=("layers.{layer}.block_sparse_moe.gate.weight",),
        hf_also=(_L + "mlp.gate.weight",),
    ),
    Tensor(
        "layers.{layer}.feed_forward.experts.{expert}.w1.weight",
        _E + "w1.weight",
        "blk.{layer}.ffn_gate.{expert}.weight",
        ("inter", "hidden"),
        EXPERT,
        native_also=("layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight",),
        gguf_stacked="blk.{layer}.ffn_gate_exps.weight",
        native_stacked="layers.{layer}.block_sparse_moe.w1",
        hf_fused=_L + "mlp.experts.gate_up_proj",
    ),
    Tensor(
        "layers.{layer}.feed_forward.experts.{expert}.w2.weight",
        _E + "w2.weight",
        "blk.{layer}.ffn_down.{expert}.weight",
        ("hidden", "inter"),
        EXPERT,
        native_also=("layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight",),
        gguf_stacked="blk.{layer}.ffn_down_exps.weight",
        native_stacked="layers.{layer}.block_sparse_moe.w2",
        hf_fused=_L + "mlp.experts.down_proj",
    ),
    Tensor(
        "layers.{layer}.feed_forward.experts.{expert}.w3.weight",
        _E + "w3.weight",
        "blk.{layer}.ffn_up.{expert}.weight",
        ("inter", "hidden"),
        EXPERT,
        native_also=("layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight",),
        gguf_stacked="blk.{layer}.ffn_up_exps.weight",
        native_stacked="layers.{layer}.block_sparse_moe.w3",
        hf_fused=_L + "mlp.experts.gate_up_proj",
    ),
)


# --- which tensors a config has, and their shapes -------------------------------------------------------------------


def has_experts(config: Mapping[str, Any]) -> bool:
    """Whether a config dict describes a mixture of experts."""
    return bool(config.get("num_local_experts"))


def rows(config: Mapping[str, Any]) -> list[Tensor]:
    """The table's rows a config dict has: an untied output head, a dense MLP or experts and their router."""
    experts = has_experts(config)
    return [
        row
        for row in TENSORS
        if not (row.role == HEAD and config.get("tie_word_embeddings"))
        and not (row.role == MLP and experts)
        and not (row.role in (ROUTER, EXPERT) and not experts)
    ]


def dimensions(config: Mapping[str, Any]) -> dict[str, int]:
    """The named dimensions of the table's shapes for a config dict."""
    size = head_dim(config)
    return {
        "vocab": config["vocab_size"],
        "hidden": config["hidden_size"],
        "inter": config["intermediate_size"],
        "q": config["num_attention_heads"] * size,
        "kv": (config.get("num_key_value_heads") or config["num_attention_heads"]) * size,
        "experts": config.get("num_local_experts") or 0,
    }


def shape(row: Tensor, config: Mapping[str, Any]) -> tuple[int, ...]:
    sizes = dimensions(config)
    return tuple(sizes[name] for name in row.shape)


def copies(row: Tensor, config: Mapping[str, Any]) -> int:
    """How many tensors a row stands for: one per layer (and per expert)."""
    count = config["num_hidden_layers"] if "{layer}" in row.native else 1
    return count * (config["num_local_experts"] if "{expert}" in row.native else 1)


def weight_count(config: Mapping[str, Any]) -> int:
    """How many weights a config's checkpoint holds, without listing them (memory independent of the config)."""
    return sum(copies(row, config) for row in rows(config))


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the causal LM a config dict describes, in closed form (without listing its tensors, whatever
    the config says)."""
    return sum(_size(row, config) * copies(row, config) for row in rows(config))


def _size(row: Tensor, config: Mapping[str, Any]) -> int:
    return math.prod(shape(row, config))


def layer_parameters(config: Mapping[str, Any], *, linear: bool) -> int:
    """Parameters of one decoder layer: in its linear weights (what bitsandbytes quantizes), or in the rest."""
    per_layer = {**config, "num_hidden_layers": 1}
    return sum(
        _size(row, config) * copies(row, per_layer)
        for row in rows(config)
        if "{layer}" in row.native and (row.role in LINEAR_ROLES) == linear
    )


def model_parameters(config: Mapping[str, Any]) -> int:
    """Parameters outside the decoder layers: embeddings, the output head (unless tied) and the final norm."""
    return sum(_size(row, config) for row in rows(config) if "{layer}" not in row.native)


def layer_linear_shapes(config: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """(out_features, in_features, count) of one decoder layer's linear weights: what bitsandbytes quantizes."""
    per_layer = {**config, "num_hidden_layers": 1}
    return [(*shape(row, config), copies(row, per_layer)) for row in rows(config) if row.role in LINEAR_ROLES]


def expected_hf_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight of a causal LM described by `config` (a transformers config dict), with its shape, in the
    table's order (per layer, per expert). Mixtral experts use the 4.x per-expert names, as in native checkpoints."""
    sizes = {row: shape(row, config) for row in rows(config)}
    shapes = {row.hf: size for row, size in sizes.items() if "{layer}" not in row.hf}
    layer_rows = [row for row in sizes if "{layer}" in row.hf and "{expert}" not in row.hf]
    expert_rows = [row for row in sizes if "{expert}" in row.hf]
    for layer in range(config["num_hidden_layers"]):
        for row in layer_rows:
            shapes[row.hf.format(layer=layer)] = sizes[row]
        for expert in range(config.get("num_local_experts") or 0):
            for row in expert_rows:
                shapes[row.hf.format(layer=layer, expert=expert)] = sizes[row]
    return shapes


def natural_key(name: str) -> list[Any]:
    """Sorts `layers.10` after `layers.9`."""
    return [int(part) if part.isdigit() else part for part in name.split(".")]


# --- renames --------------------------------------------------------------------------------------------------------


def _pattern(template: str) -> re.Pattern:
    escaped = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{expert\}", r"(?P<expert>\d+)")
    return re.compile(escaped)


@dataclass(frozen=True)
class Match:
    row: Tensor
    layer: int = 0
    expert: int = 0

    def name(self, spelling: str) -> str:
        """The tensor's name in `spelling` ("native", "hf", "gguf", "gguf_stacked", "native_stacked", "hf_fused")."""
        return getattr(self.row, spelling).format(layer=self.layer, expert=self.expert)


def _index(spellings: tuple[str, ...]) -> list[tuple[re.Pattern, Tensor]]:
    found = []
    for row in TENSORS:
        for spelling in spellings:
            names = getattr(row, spelling)
            for name in (names,) if isinstance(names, str) else names or ():
                found.append((_pattern(name), row))
    return found


_INDEXES = {
    "native": _index(("native", "native_also")),
    "hf": _index(("hf", "hf_also")),
    "gguf": _index(("gguf",)),
    "gguf_stacked": _index(("gguf_stacked",)),
    "native_stacked": _index(("native_stacked",)),
    "hf_fused": _index(("hf_fused",)),
}


def find(name: str, spelling: str) -> Match | None:
    """The row (and layer and expert) of a tensor named `name` in `spelling`, or None."""
    for pattern, row in _INDEXES[spelling]:
        match = pattern.fullmatch(name)
        if match is not None:
            groups = {key: int(value) for key, value in match.groupdict().items()}
            return Match(row, **groups)
    return None


def rename(name: str, source: str, target: str) -> str | None:
    """`name` in `source` spelling, renamed to `target` ("native", "hf", "gguf"); None if the table has no such
    tensor."""
    match = find(name, source)
    return match.name(target) if match is not None else None


def fused_parts(row: Tensor) -> list[Tensor]:
    """The expert rows stacked into `row`'s transformers 5.x fused tensor, in their order along dim 1."""
    return [other for other in TENSORS if other.hf_fused is not None and other.hf_fused == row.hf_fused]


def per_expert_module(row: Tensor) -> str:
    """The name of an expert row's module inside its expert (`w1`, `w2`, `w3`)."""
    return row.hf.rsplit(".", 2)[-2]
