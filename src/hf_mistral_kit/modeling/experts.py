"""Routed experts that bitsandbytes can quantize (Mixtral, mistral4, mistral_large4).

transformers 5.x stores the routed experts of every Mistral MoE as two fused 3-D parameters
(`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`). bitsandbytes only replaces `nn.Linear` modules, so a "4-bit"
Mixtral keeps all its experts (~95% of the weights) in 16-bit, and a 4-bit Mistral Small 4 or Large 4 nearly all of
its weights (97% for Large 4). When a model is loaded with a bitsandbytes config, the kit classes build the experts
as one `nn.Linear` triple per expert instead (Mistral's own layout, `experts.N.w1/w2/w3`), which bitsandbytes
replaces with `Linear4bit`/`Linear8bitLt` as it does for every other projection. Shared experts are `nn.Linear`s
already.

Checkpoints come in two layouts; both load into the per-expert modules through transformers' weight-conversion
machinery, tensor by tensor, so the quantize-on-load path of bitsandbytes stays streaming:
- per-expert layouts (Mixtral's 4.x/native `block_sparse_moe.experts.N.w1.weight`, mistral_large4's native
  `layers.N.experts.E.w1.weight`, mistral4's `mlp.experts.E.w1.weight`...): renames to `mlp.experts.N.w1.weight`;
- 5.x fused layout (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`): `UnfuseExperts` splits each fused tensor
  into per-expert weights before they are quantized.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.core_model_loading import (
    Concatenate,
    ConversionOps,
    MergeModulelist,
    WeightConverter,
    WeightRenaming,
    WeightTransform,
)

from ..formats import names
from .quantization import experts_need_linear_layers

__all__ = [
    "ExpertLinears",
    "ExpertMLP",
    "LoadOnlyConverter",
    "UnfuseExperts",
    "experts_need_linear_layers",
    "merge_converters",
    "unfuse_converters",
    "use_linear_experts",
]


def expert_width(config: Any) -> int:
    """The hidden width of one routed expert: `moe_intermediate_size` where the config has one (mistral4, Large 4),
    else `intermediate_size` (Mixtral)."""
    return getattr(config, "moe_intermediate_size", None) or config.intermediate_size


class ExpertMLP(nn.Module):
    """One routed expert: `w2(act(w1(x)) * w3(x))`, named as in Mistral's checkpoints (and transformers 4.x's)."""

    def __init__(self, config: Any):
        super().__init__()
        width = expert_width(config)
        self.w1 = nn.Linear(config.hidden_size, width, bias=False)
        self.w2 = nn.Linear(width, config.hidden_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, width, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states))


class ExpertLinears(nn.ModuleList):
    """Drop-in for transformers' fused experts (`MixtralExperts`, `Mistral4Experts`, ...: same call signature)
    holding one `ExpertMLP` per routed expert (`num_local_experts`, which mistral4's and Large 4's configs alias to
    `n_routed_experts`)."""

    def __init__(self, config: Any):
        super().__init__(ExpertMLP(config) for _ in range(config.num_local_experts))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        output = torch.zeros_like(hidden_states)
        # (num_experts, top_k, num_tokens): which (token, slot) pairs each expert serves.
        expert_mask = nn.functional.one_hot(top_k_index, num_classes=len(self)).permute(2, 1, 0)
        for expert_idx in expert_mask.sum(dim=(1, 2)).nonzero().flatten().tolist():
            slot, token_idx = torch.where(expert_mask[expert_idx])
            expert_out = self[expert_idx](hidden_states[token_idx]) * top_k_weights[token_idx, slot, None]
            output.index_add_(0, token_idx, expert_out.to(output.dtype))
        return output


class UnfuseExperts(ConversionOps):
    """Split a fused experts tensor `[num_experts, k * rows, cols]` into `.experts.N.<name>.weight` tensors.

    `names` lists the per-expert projections stacked along dim 1, e.g. `("w1", "w3")` for `gate_up_proj`.
    """

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    @torch.no_grad()
    def convert(self, input_dict: dict[str, Any], source_patterns: list[str], target_patterns: list[str], **kwargs):
        (tensors,) = input_dict.values()
        fused = tensors[0] if isinstance(tensors, list) else tensors
        output = {}
        for expert_idx, expert in enumerate(fused):
            for name, part in zip(self.names, expert.chunk(len(self.names), dim=0), strict=True):
                output[f".experts.{expert_idx}.{name}.weight"] = part.contiguous()
        return output

    @property
    def reverse_op(self) -> ConversionOps:
        raise NotImplementedError(
            "A bitsandbytes-quantized kit mixture of experts loaded from a fused (transformers 5.x) checkpoint cannot "
            "be saved back in that layout: pass `save_original_format=False` to `save_pretrained`, or save the "
            "unquantized model."
        )


# Mixtral's module paths in the tensor table: 4.x's `block_sparse_moe` and 5.x's `mlp`.
_ROUTER = next(row for row in names.TENSORS if row.role == names.ROUTER)
_OLD_MOE, _MOE = _ROUTER.hf.split(".")[3], _ROUTER.hf_also[0].split(".")[3]


def unfuse_converters() -> list[WeightTransform]:
    """Each 5.x fused experts tensor split into per-expert `experts.N.w1/w2/w3` weights, from the tensor table
    (`formats.names`): the same fused names and per-expert names for every Mistral MoE."""
    fused = {row.hf_fused: names.fused_parts(row) for row in names.TENSORS if row.hf_fused is not None}
    converters: list[WeightTransform] = []
    for name, parts in fused.items():
        # Every MoE's rows name the same per-expert modules (Mixtral's and mistral4's `w1`, `w3`): once each.
        modules = tuple(dict.fromkeys(names.per_expert_module(row) for row in parts))
        source = re.escape("." + name.split(f".{_MOE}.", 1)[1])  # \.experts\.gate_up_proj, not shared_experts
        target = f".experts.0.{modules[0]}.weight"
        converters.append(WeightConverter(source, target, operations=[UnfuseExperts(modules)]))
    return converters


class LoadOnlyConverter(WeightConverter):
    """A conversion the kit applies on load only: transformers reverts a model's conversions on `save_pretrained`,
    which would write a layout its own upstream class cannot read (mistral4's per-expert one); `KitModelMixin`
    drops these first."""

    __slots__ = ()


def merge_converters(load_only: bool = False) -> list[WeightTransform]:
    """Per-expert `experts.N.w1/w2/w3` weights merged into the 5.x fused tensors (the reverse of
    `unfuse_converters`, as transformers' own mappings for Mixtral and mistral_large4 do), from the tensor table;
    `LoadOnlyConverter`s if `load_only`."""
    fused = {row.hf_fused: names.fused_parts(row) for row in names.TENSORS if row.hf_fused is not None}
    converters: list[WeightTransform] = []
    for name, parts in fused.items():
        modules = tuple(dict.fromkeys(names.per_expert_module(row) for row in parts))
        target = "." + name.split(f".{_MOE}.", 1)[1]  # .experts.gate_up_proj
        sources = [rf"\.experts.*.{module}.weight" for module in modules]  # `*`: the expert, as transformers' own
        operations: list[ConversionOps] = [MergeModulelist(dim=0)]
        if len(modules) > 1:
            operations.append(Concatenate(dim=1))
        converters.append((LoadOnlyConverter if load_only else WeightConverter)(sources, target, operations=operations))
    return converters


def per_expert_conversion_mapping() -> list[WeightTransform]:
    """Load both Mixtral checkpoint layouts into `ExpertLinears` (module path `mlp.experts.N.w1`): the 4.x module
    path renamed to 5.x's, and each 5.x fused tensor split per expert."""
    return [WeightRenaming(f".{_OLD_MOE}.", f".{_MOE}."), *unfuse_converters()]


def use_linear_experts(model: nn.Module) -> None:
    """Replace the fused experts of every MoE layer of a base model (`model.layers`) with `ExpertLinears` (dense
    layers, mistral4's and Large 4's first ones, have no `mlp.experts`)."""
    for layer in model.layers:
        if hasattr(layer.mlp, "experts"):
            layer.mlp.experts = ExpertLinears(model.config)
