"""Every tensor of a Mistral-family checkpoint: ONE table, a row per tensor, in every spelling the kit reads or writes.

A row names one tensor in Mistral's native layout (mistral-inference's names; for the Large line, the names
transformers' `conversion_mapping["mistral_large4"]` reads, which Mistral Small 4's native files share), in
transformers' layout (the 4.x per-expert names for Mixtral, which the kit's loader and transformers' conversion mapping
both know; the kit's per-expert module names for the DeepSeek-style experts of Mistral 4 and the Large line) and in
llama.cpp's GGUF layout (None where the kit knows no exact llama.cpp name), with its shape and how its rows are laid
out (`rotary`: `wq`/`wk` are stored in Mistral's interleaved rotary order natively and in GGUF, in rotate-half order
by transformers). Everything else is derived: the renames in each direction, the expected shapes of a config, the
weight and parameter counts, what bitsandbytes quantizes and what GGUF keeps in float32, the stacked and fused layouts
of the experts. A new architecture's tensors are rows here.

Which layers hold a row is the row's `part`, decided per layer by `layer_kinds` (one `Layer` per decoder layer):
grouped-query attention (mistral, mixtral, ministral, ministral3) or multi-head latent attention (mistral4 with or
without a query LoRA; the Large line without, plus its per-head softmax scaling and attention indexer), a dense MLP,
Mixtral's experts or DeepSeek-style experts (a router, routed experts and shared experts; the first
`first_k_dense_replace` layers dense, or `mlp_layer_types` for the Large line), and the Large line's per-layer
variants: NoPE layers (no rotary slice: smaller `kv_a_proj_with_mqa`, larger `kv_b_proj`), layers that reuse an
earlier layer's latent KV (no `kv_a_proj_with_mqa`/`kv_a_layernorm`) and layers that reuse the previous layer's index
(no indexer). Shapes are in named dimensions (`dimensions`), some of them per layer. Transformers names are the causal
LM's (`model.layers.N...`); vision-language wrappers hold the same text tensors under `model.language_model.` (the
text model is what a causal LM of theirs loads) beside a vision tower and projector, whose rows count only when the
config dict carries its `vision_config` (`text_config_dict(..., vision=True)`).

`{layer}` and `{expert}` in a name stand for the layer (a vision layer, in vision rows) and expert numbers. Nothing
here imports torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..architectures import find_architecture
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
# DeepSeek-style shared experts (plain linear layers beside the routed ones), the Large line's attention indexer (its
# linear layers pick the attended positions: kept in the compute dtype), small per-head or per-frequency scales
# (softmax scaling, the learned rotary `alpha`), the vision tower and the vision-to-text projector.
SHARED_EXPERT, INDEXER, SCALE, VISION, PROJECTOR = "shared_expert", "indexer", "scale", "vision", "projector"
# Decoder-layer linear weights: what bitsandbytes quantizes (everything else stays in the compute dtype). The kit builds
# routed experts as one linear triple per expert, so bitsandbytes reaches them too.
LINEAR_ROLES = (ATTENTION, MLP, EXPERT, SHARED_EXPERT)
# What llama.cpp's converter keeps in float32 whatever the file type (as the kit's writer does).
F32_ROLES = (NORM, ROUTER)

# Parts: which layers (or which models) hold a row; `layer_kinds` decides them per layer.
MODEL = "model"  # once per model
LAYER = "layer"  # every decoder layer
GQA = "gqa"  # grouped-query attention: q/k/v projections
MLA_Q_LORA = "mla_q_lora"  # latent attention with a query LoRA (Mistral Small 4)
MLA_Q = "mla_q"  # latent attention without one (the Large line; Mistral 4 with q_lora_rank null)
MLA_KV_A = "mla_kv_a"  # the latent KV down-projection, in layers that compute their own KV
MLA = "mla"  # every latent-attention layer
SOFTMAX_SCALING = "softmax_scaling"  # the Large line's per-head softmax scaling
INDEXED = "indexed"  # the Large line's layers with their own attention indexer
DENSE = "dense"  # a dense MLP
MIXTRAL = "mixtral"  # Mixtral's router and experts
MOE = "moe"  # DeepSeek-style router and routed experts
SHARED = "shared"  # DeepSeek-style shared experts (n_shared_experts > 0)
LEROPE = "lerope"  # the Large line's learned rotary scale (once per model)
VISION_MODEL, VISION_LAYER = "vision_model", "vision_layer"  # a vision tower and projector, and its layers


@dataclass(frozen=True)
class Tensor:
    native: str  # mistral-inference's name
    hf: str  # transformers' name (4.x per-expert names for experts)
    gguf: str | None  # llama.cpp's name (one tensor per expert: its first Mixtral files); None where unknown
    shape: tuple[str, ...]  # dimensions, named as in `dimensions()`
    role: str
    rotary: str | None = None  # the config field counting the heads of rows stored in interleaved rotary order
    native_also: tuple[str, ...] = ()  # other native names read (the first Mixtral release's)
    hf_also: tuple[str, ...] = ()  # other transformers names read (transformers 5.x's)
    gguf_stacked: str | None = None  # llama.cpp's current files: every expert of a layer in one [experts, ...] tensor
    native_stacked: str | None = None  # the first Mixtral release: experts stacked along the rows, no `.weight`
    hf_fused: str | None = None  # transformers 5.x: the experts fused into one [experts, parts * rows, cols] tensor
    part: str = LAYER  # which layers hold it (see the parts above)
    float32: bool = False  # kept in float32 whatever the load dtype (transformers' `_keep_in_fp32_modules_strict`)


_L, _E = "model.layers.{layer}.", "model.layers.{layer}.block_sparse_moe.experts.{expert}."
_A, _NA = _L + "self_attn.", "layers.{layer}.attention."  # attention, in transformers' and native names
_X, _NX = _A + "indexer.", _NA + "indexer."  # the Large line's attention indexer
_D = _L + "mlp."  # DeepSeek-style MoE (transformers)
_V, _NV = "model.vision_tower.", "vision_encoder."  # a Pixtral vision tower
_VL, _NVL = _V + "transformer.layers.{layer}.", _NV + "transformer.layers.{layer}."
_P = "model.multi_modal_projector."
TENSORS: tuple[Tensor, ...] = (
    Tensor(
        "tok_embeddings.weight",
        "model.embed_tokens.weight",
        "token_embd.weight",
        ("vocab", "hidden"),
        EMBEDDING,
        part=MODEL,
    ),
    Tensor("norm.weight", "model.norm.weight", "output_norm.weight", ("hidden",), NORM, part=MODEL),
    Tensor("output.weight", "lm_head.weight", "output.weight", ("vocab", "hidden"), HEAD, part=MODEL),
    Tensor(
        "layers.{layer}.attention.wq.weight",
        _L + "self_attn.q_proj.weight",
        "blk.{layer}.attn_q.weight",
        ("q", "hidden"),
        ATTENTION,
        rotary="num_attention_heads",
        part=GQA,
    ),
    Tensor(
        "layers.{layer}.attention.wk.weight",
        _L + "self_attn.k_proj.weight",
        "blk.{layer}.attn_k.weight",
        ("kv", "hidden"),
        ATTENTION,
        rotary="num_key_value_heads",
        part=GQA,
    ),
    Tensor(
        "layers.{layer}.attention.wv.weight",
        _L + "self_attn.v_proj.weight",
        "blk.{layer}.attn_v.weight",
        ("kv", "hidden"),
        ATTENTION,
        part=GQA,
    ),
    Tensor(
        "layers.{layer}.attention.wo.weight",
        _L + "self_attn.o_proj.weight",
        "blk.{layer}.attn_output.weight",
        ("hidden", "o"),
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
    # A dense MLP (Mistral; the first layers of the Large line, and of Mistral 4 when first_k_dense_replace > 0).
    Tensor(
        "layers.{layer}.feed_forward.w1.weight",
        _L + "mlp.gate_proj.weight",
        "blk.{layer}.ffn_gate.weight",
        ("inter", "hidden"),
        MLP,
        part=DENSE,
    ),
    Tensor(
        "layers.{layer}.feed_forward.w2.weight",
        _L + "mlp.down_proj.weight",
        "blk.{layer}.ffn_down.weight",
        ("hidden", "inter"),
        MLP,
        part=DENSE,
    ),
    Tensor(
        "layers.{layer}.feed_forward.w3.weight",
        _L + "mlp.up_proj.weight",
        "blk.{layer}.ffn_up.weight",
        ("inter", "hidden"),
        MLP,
        part=DENSE,
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
        part=MIXTRAL,
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
        part=MIXTRAL,
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
        part=MIXTRAL,
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
        part=MIXTRAL,
    ),
    # Multi-head latent attention (Mistral 4, the Large line): queries through a LoRA (q_a, its norm, q_b) or one
    # q_proj; keys and values from a shared latent (kv_a: latent + the rotary key slice; its norm; kv_b: the per-head
    # keys without rotary part and values); o_proj is the row above. Native names as vLLM's and transformers' readers
    # of Mistral's MLA releases spell them.
    Tensor(_NA + "wq_a.weight", _A + "q_a_proj.weight", None, ("q_lora", "hidden"), ATTENTION, part=MLA_Q_LORA),
    Tensor(_NA + "q_a_norm.weight", _A + "q_a_layernorm.weight", None, ("q_lora",), NORM, part=MLA_Q_LORA),
    Tensor(_NA + "wq_b.weight", _A + "q_b_proj.weight", None, ("q_heads", "q_lora"), ATTENTION, part=MLA_Q_LORA),
    Tensor(_NA + "wq.weight", _A + "q_proj.weight", None, ("q_heads", "hidden"), ATTENTION, part=MLA_Q),
    Tensor(
        _NA + "wkv_a_with_mqa.weight",
        _A + "kv_a_proj_with_mqa.weight",
        None,
        ("kv_a", "hidden"),
        ATTENTION,
        part=MLA_KV_A,
    ),
    Tensor(_NA + "kv_a_norm.weight", _A + "kv_a_layernorm.weight", None, ("kv_lora",), NORM, part=MLA_KV_A),
    Tensor(_NA + "wkv_b.weight", _A + "kv_b_proj.weight", None, ("kv_b", "kv_lora"), ATTENTION, part=MLA),
    # The Large line: a learned scale and bias of each head's softmax, and the attention indexer (DeepSeek sparse
    # attention: it scores the cached positions and keeps the top `index_topk` for each query).
    Tensor(_NA + "ssmax_scaling.s", _A + "softmax_scaling.scale", None, ("heads",), SCALE, part=SOFTMAX_SCALING),
    Tensor(_NA + "ssmax_scaling.b", _A + "softmax_scaling.bias", None, ("heads",), SCALE, part=SOFTMAX_SCALING),
    Tensor(_NX + "wq_b.weight", _X + "wq_b.weight", None, ("index_q", "hidden"), INDEXER, part=INDEXED),
    Tensor(_NX + "wk.weight", _X + "wk.weight", None, ("index_dim", "hidden"), INDEXER, part=INDEXED),
    Tensor(_NX + "k_norm.weight", _X + "k_norm.weight", None, ("index_dim",), INDEXER, part=INDEXED),
    Tensor(_NX + "k_norm.bias", _X + "k_norm.bias", None, ("index_dim",), INDEXER, part=INDEXED),
    Tensor(
        _NX + "weights_proj.weight", _X + "weights_proj.weight", None, ("index_heads", "hidden"), INDEXER, part=INDEXED
    ),
    Tensor(_NX + "q_input_norm.weight", _X + "q_input_norm.weight", None, ("hidden",), INDEXER, part=INDEXED),
    Tensor(_NX + "q_input_norm.bias", _X + "q_input_norm.bias", None, ("hidden",), INDEXER, part=INDEXED),
    Tensor(_NX + "ssmax_scaling.s", _X + "softmax_scaling.scale", None, ("index_heads",), INDEXER, part=INDEXED),
    Tensor(_NX + "ssmax_scaling.b", _X + "softmax_scaling.bias", None, ("index_heads",), INDEXER, part=INDEXED),
    Tensor("lerope.alpha", "model.rotary_emb.alpha", None, ("rotary_frequencies",), SCALE, part=LEROPE, float32=True),
    # DeepSeek-style experts (Mistral 4, the Large line): a router (an nn.Parameter, float32 in the Large line),
    # routed experts (transformers 5.x fuses them; the kit builds one linear triple per expert, `mlp.experts.N.w1`,
    # as for Mixtral) and shared experts every token goes through.
    Tensor("layers.{layer}.gate.weight", _D + "gate.weight", None, ("experts", "hidden"), ROUTER, part=MOE),
    Tensor(
        "layers.{layer}.experts.{expert}.w1.weight",
        _D + "experts.{expert}.w1.weight",
        None,
        ("moe_inter", "hidden"),
        EXPERT,
        hf_fused=_D + "experts.gate_up_proj",
        part=MOE,
    ),
    Tensor(
        "layers.{layer}.experts.{expert}.w2.weight",
        _D + "experts.{expert}.w2.weight",
        None,
        ("hidden", "moe_inter"),
        EXPERT,
        hf_fused=_D + "experts.down_proj",
        part=MOE,
    ),
    Tensor(
        "layers.{layer}.experts.{expert}.w3.weight",
        _D + "experts.{expert}.w3.weight",
        None,
        ("moe_inter", "hidden"),
        EXPERT,
        hf_fused=_D + "experts.gate_up_proj",
        part=MOE,
    ),
    Tensor(
        "layers.{layer}.shared_experts.w1.weight",
        _D + "shared_experts.gate_proj.weight",
        None,
        ("shared_inter", "hidden"),
        SHARED_EXPERT,
        part=SHARED,
    ),
    Tensor(
        "layers.{layer}.shared_experts.w2.weight",
        _D + "shared_experts.down_proj.weight",
        None,
        ("hidden", "shared_inter"),
        SHARED_EXPERT,
        part=SHARED,
    ),
    Tensor(
        "layers.{layer}.shared_experts.w3.weight",
        _D + "shared_experts.up_proj.weight",
        None,
        ("shared_inter", "hidden"),
        SHARED_EXPERT,
        part=SHARED,
    ),
    # A Pixtral vision tower and the projector into the text model (vision-language wrappers: mistral3, the Large
    # line). Counted only when planning the whole vision-language model; never quantized.
    Tensor(
        _NV + "patch_conv.weight",
        _V + "patch_conv.weight",
        None,
        ("vision_hidden", "channels", "patch", "patch"),
        VISION,
        part=VISION_MODEL,
    ),
    Tensor(_NV + "ln_pre.weight", _V + "ln_pre.weight", None, ("vision_hidden",), VISION, part=VISION_MODEL),
    Tensor(
        _NVL + "attention_norm.weight",
        _VL + "attention_norm.weight",
        None,
        ("vision_hidden",),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "attention.wq.weight",
        _VL + "attention.q_proj.weight",
        None,
        ("vision_q", "vision_hidden"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "attention.wk.weight",
        _VL + "attention.k_proj.weight",
        None,
        ("vision_q", "vision_hidden"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "attention.wv.weight",
        _VL + "attention.v_proj.weight",
        None,
        ("vision_q", "vision_hidden"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "attention.wo.weight",
        _VL + "attention.o_proj.weight",
        None,
        ("vision_hidden", "vision_q"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(_NVL + "ffn_norm.weight", _VL + "ffn_norm.weight", None, ("vision_hidden",), VISION, part=VISION_LAYER),
    Tensor(
        _NVL + "feed_forward.w1.weight",
        _VL + "feed_forward.gate_proj.weight",
        None,
        ("vision_inter", "vision_hidden"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "feed_forward.w2.weight",
        _VL + "feed_forward.down_proj.weight",
        None,
        ("vision_hidden", "vision_inter"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor(
        _NVL + "feed_forward.w3.weight",
        _VL + "feed_forward.up_proj.weight",
        None,
        ("vision_inter", "vision_hidden"),
        VISION,
        part=VISION_LAYER,
    ),
    Tensor("pre_mm_projector_norm.weight", _P + "norm.weight", None, ("vision_hidden",), PROJECTOR, part=VISION_MODEL),
    Tensor(
        "patch_merger.merging_layer.weight",
        _P + "patch_merger.merging_layer.weight",
        None,
        ("vision_hidden", "merged"),
        PROJECTOR,
        part=VISION_MODEL,
    ),
    Tensor(
        "vision_language_adapter.w_in.weight",
        _P + "linear_1.weight",
        None,
        ("hidden", "vision_hidden"),
        PROJECTOR,
        part=VISION_MODEL,
    ),
    Tensor(
        "vision_language_adapter.w_out.weight",
        _P + "linear_2.weight",
        None,
        ("hidden", "hidden"),
        PROJECTOR,
        part=VISION_MODEL,
    ),
)


# --- which layers hold which rows -----------------------------------------------------------------------------------

# Tensor layouts of the decoder: grouped-query attention, Mistral 4's latent attention, the Large line's.
GQA_LAYOUT, MISTRAL4_LAYOUT, LARGE4_LAYOUT = "gqa", "mistral4", "mistral_large4"


def layout(config: Mapping[str, Any]) -> str:
    """Which decoder a (text) config dict describes: GQA_LAYOUT (mistral, mixtral, ministral, ministral3, and a dict
    without `model_type`), MISTRAL4_LAYOUT or LARGE4_LAYOUT (`mistral_large4_text` is the Large line's text config)."""
    model_type = config.get("model_type")
    row = find_architecture(model_type.removesuffix("_text") if isinstance(model_type, str) else None)
    if row is None or not row.latent_attention:
        return GQA_LAYOUT
    return LARGE4_LAYOUT if row.model_type == LARGE4_LAYOUT else MISTRAL4_LAYOUT


@dataclass(frozen=True)
class Layer:
    """What one decoder layer holds (and caches): its attention and MLP, and the Large line's per-layer variants."""

    attention: str  # GQA or MLA
    mlp: str  # DENSE, MIXTRAL or MOE
    shared_experts: bool = False  # DeepSeek-style shared experts beside the routed ones
    q_lora: bool = False  # MLA queries through q_a/q_b (else one q_proj)
    rope: bool = True  # MLA: a rotary slice (False: a NoPE layer of the Large line)
    own_kv: bool = True  # MLA: computes its latent KV (False: reuses an earlier layer's, `kv_source_layers`)
    indexer: bool = False  # the Large line: its own attention indexer (False: reuses the previous one's index)
    softmax_scaling: bool = False  # the Large line's per-head softmax scaling
    sliding: bool = False  # attends to a sliding window (its cache keeps the window only)

    @property
    def parts(self) -> frozenset[str]:
        parts = {LAYER, self.mlp}
        if self.attention == GQA:
            parts.add(GQA)
        else:
            parts |= {MLA, MLA_Q_LORA if self.q_lora else MLA_Q}
            parts |= {MLA_KV_A} if self.own_kv else set()
            parts |= {INDEXED} if self.indexer else set()
            parts |= {SOFTMAX_SCALING} if self.softmax_scaling else set()
        if self.mlp == MOE and self.shared_experts:
            parts.add(SHARED)
        return frozenset(parts)


def _per_layer(config: Mapping[str, Any], key: str, default: list) -> list:
    value = config.get(key)
    return list(value) if isinstance(value, (list, tuple)) and len(value) == len(default) else default


def layer_kinds(config: Mapping[str, Any]) -> list[Layer]:
    """One `Layer` per decoder layer of a (text) config dict, by transformers' rules: ministral's `layer_types`
    (sliding or full attention; every layer slides when `sliding_window` is set and `layer_types` is not, as in
    mistral, mixtral and ministral3), Mistral 4's `first_k_dense_replace` dense layers, and the Large line's
    `mlp_layer_types`, `no_rope_layers` (0: NoPE), `kv_source_layers` (an earlier layer: KV reused) and
    `indexer_types` ("shared": the previous index reused). Lists a config.json may leave out take transformers'
    defaults."""
    count = config["num_hidden_layers"]
    kind = layout(config)
    if kind == GQA_LAYOUT:
        window = config.get("sliding_window") is not None
        types = _per_layer(config, "layer_types", ["sliding_attention" if window else "full_attention"] * count)
        mlp = MIXTRAL if has_experts(config) else DENSE
        return [Layer(GQA, mlp, sliding=window and types[i] == "sliding_attention") for i in range(count)]
    dense = config.get("first_k_dense_replace", 1 if kind == LARGE4_LAYOUT else 0)  # transformers' defaults
    dense = min(dense or 0, count)
    mlp_types = ["dense"] * dense + ["sparse"] * (count - dense)
    shared = bool(config.get("n_shared_experts"))
    if kind == MISTRAL4_LAYOUT:
        q_lora = config.get("q_lora_rank") is not None
        return [Layer(MLA, MOE if i >= dense else DENSE, shared, q_lora=q_lora) for i in range(count)]
    mlp_types = _per_layer(config, "mlp_layer_types", mlp_types)
    rope = _per_layer(config, "no_rope_layers", [int((i + 1) % 4 != 0) for i in range(count)])
    sources = _per_layer(config, "kv_source_layers", list(range(count)))
    indexers = _per_layer(config, "indexer_types", ["full"] * count)
    return [
        Layer(
            MLA,
            MOE if mlp_types[i] == "sparse" else DENSE,
            shared,
            rope=bool(rope[i]),
            own_kv=sources[i] == i,
            indexer=indexers[i] != "shared",
            softmax_scaling=True,
        )
        for i in range(count)
    ]


def layer_groups(config: Mapping[str, Any]) -> list[tuple[Layer, int]]:
    """The distinct kinds of decoder layer of a config dict and how many layers are of each (first seen first)."""
    return list(Counter(layer_kinds(config)).items())


def _model_parts(config: Mapping[str, Any]) -> set[str]:
    parts = {MODEL}
    if layout(config) == LARGE4_LAYOUT:
        parts.add(LEROPE)
    if isinstance(config.get("vision_config"), Mapping):
        parts |= {VISION_MODEL, VISION_LAYER}
    return parts


def _decoder(row: Tensor) -> bool:
    return row.part not in (MODEL, LEROPE, VISION_MODEL, VISION_LAYER)


# --- which tensors a config has, and their shapes -------------------------------------------------------------------


def has_experts(config: Mapping[str, Any]) -> bool:
    """Whether a config dict describes a mixture of experts (Mixtral's `num_local_experts`, or `n_routed_experts` as
    Mistral 4's and the Large line's config.json spell it)."""
    return bool(experts_count(config))


def experts_count(config: Mapping[str, Any]) -> int:
    """The routed experts of each MoE layer (0 for a dense model)."""
    return config.get("num_local_experts") or config.get("n_routed_experts") or 0


def _tied(row: Tensor, config: Mapping[str, Any]) -> bool:
    return row.role == HEAD and bool(config.get("tie_word_embeddings"))


def rows(config: Mapping[str, Any]) -> list[Tensor]:
    """The table's rows a config dict has in any layer: an untied output head, the attention, MLP or experts and
    router of each layer's kind (`layer_kinds`), the vision tower when the dict carries its `vision_config`."""
    parts = _model_parts(config).union(*(layer.parts for layer, _ in layer_groups(config)))
    return [row for row in TENSORS if row.part in parts and not _tied(row, config)]


def layer_rows(config: Mapping[str, Any], layer: Layer) -> list[Tensor]:
    """The rows one decoder layer of kind `layer` holds."""
    parts = layer.parts
    return [row for row in TENSORS if row.part in parts]


def dimensions(config: Mapping[str, Any], layer: Layer | None = None) -> dict[str, int]:
    """The named dimensions of the table's shapes for a config dict (and, for the per-layer ones of latent attention,
    one kind of layer: by default a layer with a rotary slice)."""
    size = head_dim(config)
    heads = config["num_attention_heads"]
    sizes = {
        "vocab": config["vocab_size"],
        "hidden": config["hidden_size"],
        "inter": config["intermediate_size"],
        "q": heads * size,
        "kv": (config.get("num_key_value_heads") or heads) * size,
        "experts": experts_count(config),
        "o": heads * size,
        "heads": heads,
    }
    if layout(config) != GQA_LAYOUT:
        rope, nope, v = config["qk_rope_head_dim"], config["qk_nope_head_dim"], config["v_head_dim"]
        layer_rope = rope if layer is None or layer.rope else 0
        rotary = config.get("rope_parameters") or {}
        rotary_dims = int(rope * (rotary.get("partial_rotary_factor") or 1.0))
        sizes |= {
            "o": heads * v,
            "q_lora": config.get("q_lora_rank") or 0,
            "q_heads": heads * (nope + rope),
            "kv_lora": config["kv_lora_rank"],
            "kv_a": config["kv_lora_rank"] + layer_rope,
            "kv_b": heads * (nope + rope - layer_rope + v),
            "moe_inter": config.get("moe_intermediate_size") or 0,
            "shared_inter": (config.get("moe_intermediate_size") or 0) * (config.get("n_shared_experts") or 0),
            "index_heads": config.get("index_n_heads") or 0,
            "index_dim": config.get("index_head_dim") or 0,
            "index_q": (config.get("index_n_heads") or 0) * (config.get("index_head_dim") or 0),
            "rotary_frequencies": (rotary_dims + 1) // 2,
        }
    vision = config.get("vision_config")
    if isinstance(vision, Mapping):
        vision_hidden = vision["hidden_size"]
        vision_heads = vision["num_attention_heads"]
        sizes |= {
            "vision_hidden": vision_hidden,
            "vision_q": vision_heads * (vision.get("head_dim") or vision_hidden // vision_heads),
            "vision_inter": vision["intermediate_size"],
            "channels": vision.get("num_channels") or 3,
            "patch": vision["patch_size"],
            "merged": vision_hidden * (config.get("spatial_merge_size") or 2) ** 2,
        }
    return sizes


def shape(row: Tensor, config: Mapping[str, Any], layer: Layer | None = None) -> tuple[int, ...]:
    """A row's shape for a config dict, in one kind of decoder layer (by default the first that holds the row)."""
    if layer is None and row.part in (MLA, MLA_KV_A):
        layer = next((kind for kind, _ in layer_groups(config) if row.part in kind.parts), None)
    sizes = dimensions(config, layer)
    return tuple(sizes[name] for name in row.shape)


def _size(row: Tensor, config: Mapping[str, Any], layer: Layer | None = None) -> int:
    return math.prod(shape(row, config, layer))


def _per_expert(row: Tensor, config: Mapping[str, Any]) -> int:
    return experts_count(config) if "{expert}" in row.native else 1


def copies(row: Tensor, config: Mapping[str, Any]) -> int:
    """How many tensors a row stands for: one per layer that holds it (and per expert)."""
    if row.part == VISION_LAYER:
        return config["vision_config"]["num_hidden_layers"]
    if not _decoder(row):
        return 1
    layers = sum(count for layer, count in layer_groups(config) if row.part in layer.parts)
    return layers * _per_expert(row, config)


def weight_count(config: Mapping[str, Any]) -> int:
    """How many weights a config's checkpoint holds, without listing them (memory independent of the config)."""
    return sum(copies(row, config) for row in rows(config))


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the model a config dict describes (its causal LM; with a `vision_config`, the vision-language
    model), in closed form (without listing its tensors, whatever the config says)."""
    decoder = sum(
        count
        * (layer_parameters(config, linear=True, layer=layer) + layer_parameters(config, linear=False, layer=layer))
        for layer, count in layer_groups(config)
    )
    return model_parameters(config) + decoder


def keeps_float32(row: Tensor, config: Mapping[str, Any]) -> bool:
    """Whether transformers keeps a row in float32 whatever the load dtype: the Large line's router and rotary
    `alpha` (`_keep_in_fp32_modules_strict`)."""
    return row.float32 or (row.role == ROUTER and layout(config) == LARGE4_LAYOUT)


def _float32_filter(row: Tensor, config: Mapping[str, Any], float32: bool | None) -> bool:
    return float32 is None or keeps_float32(row, config) == float32


def _common_layer(config: Mapping[str, Any]) -> Layer:
    return max(layer_groups(config), key=lambda group: group[1])[0]


def layer_parameters(
    config: Mapping[str, Any], *, linear: bool, layer: Layer | None = None, float32: bool | None = None
) -> int:
    """Parameters of one decoder layer (of kind `layer`; by default the most common kind): in its linear weights
    (what bitsandbytes quantizes), or in the rest (of which, with `float32`, only those transformers keeps in float32
    or only the others)."""
    layer = layer or _common_layer(config)
    return sum(
        _size(row, config, layer) * _per_expert(row, config)
        for row in layer_rows(config, layer)
        if (row.role in LINEAR_ROLES) == linear and _float32_filter(row, config, float32)
    )


def model_parameters(config: Mapping[str, Any], *, float32: bool | None = None) -> int:
    """Parameters outside the decoder layers: embeddings, the output head (unless tied), the final norm (the Large
    line's rotary `alpha`; the vision tower and projector when the dict carries a `vision_config`)."""
    return sum(
        _size(row, config) * copies(row, config)
        for row in rows(config)
        if not _decoder(row) and _float32_filter(row, config, float32)
    )


def layer_linear_shapes(config: Mapping[str, Any], layer: Layer | None = None) -> list[tuple[int, int, int]]:
    """(out_features, in_features, count) of one decoder layer's linear weights (of kind `layer`; by default the most
    common kind): what bitsandbytes quantizes."""
    layer = layer or _common_layer(config)
    return [
        (*shape(row, config, layer), _per_expert(row, config))
        for row in layer_rows(config, layer)
        if row.role in LINEAR_ROLES
    ]


def expected_hf_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight of a causal LM described by `config` (a transformers config dict), with its shape, in the
    table's order (per layer, per expert). Experts use per-expert names (Mixtral's 4.x names, as in native
    checkpoints; the kit's `mlp.experts.N.w1` for DeepSeek-style experts)."""
    shapes = {row.hf: shape(row, config) for row in rows(config) if row.part in (MODEL, LEROPE, VISION_MODEL)}
    for row in rows(config):
        if row.part == VISION_LAYER:
            for layer in range(copies(row, config)):
                shapes[row.hf.format(layer=layer)] = shape(row, config)
    kinds = layer_kinds(config)
    sizes: dict[Layer, dict[Tensor, tuple[int, ...]]] = {}
    for kind in dict.fromkeys(kinds):
        sizes[kind] = {row: shape(row, config, kind) for row in layer_rows(config, kind)}
    for layer, kind in enumerate(kinds):
        for row, size in sizes[kind].items():
            if "{expert}" not in row.hf:
                shapes[row.hf.format(layer=layer)] = size
        for expert in range(experts_count(config) if kind.mlp in (MIXTRAL, MOE) else 0):
            for row, size in sizes[kind].items():
                if "{expert}" in row.hf:
                    shapes[row.hf.format(layer=layer, expert=expert)] = size
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

    def name(self, spelling: str) -> str | None:
        """The tensor's name in `spelling` ("native", "hf", "gguf", "gguf_stacked", "native_stacked", "hf_fused");
        None where the row has no such spelling."""
        template = getattr(self.row, spelling)
        return None if template is None else template.format(layer=self.layer, expert=self.expert)


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


def find(name: str, spelling: str, config: Mapping[str, Any] | None = None) -> Match | None:
    """The row (and layer and expert) of a tensor named `name` in `spelling`, or None. Some names stand for different
    rows in different architectures (`q_proj` of grouped-query and of latent attention, `mlp.gate` of Mixtral and of
    DeepSeek-style experts): without `config` the first row wins (Mistral's and Mixtral's come first); with a config
    dict, only the rows it has are searched."""
    allowed = None if config is None else set(rows(config))
    for pattern, row in _INDEXES[spelling]:
        if allowed is not None and row not in allowed:
            continue
        match = pattern.fullmatch(name)
        if match is not None:
            groups = {key: int(value) for key, value in match.groupdict().items()}
            return Match(row, **groups)
    return None


def rename(name: str, source: str, target: str, config: Mapping[str, Any] | None = None) -> str | None:
    """`name` in `source` spelling, renamed to `target` ("native", "hf", "gguf"); None if the table has no such
    tensor (or no `target` spelling of it). `config` as in `find`."""
    match = find(name, source, config)
    return match.name(target) if match is not None else None


def fused_parts(row: Tensor) -> list[Tensor]:
    """The expert rows stacked into `row`'s transformers 5.x fused tensor, in their order along dim 1."""
    return [other for other in TENSORS if other.hf_fused == row.hf_fused is not None and other.part == row.part]


def per_expert_module(row: Tensor) -> str:
    """The name of an expert row's module inside its expert (`w1`, `w2`, `w3`)."""
    return row.hf.rsplit(".", 2)[-2]
