"""Mixtral experts that bitsandbytes can quantize.

transformers 5.x stores Mixtral's experts as two fused 3-D parameters (`mlp.experts.gate_up_proj`,
`mlp.experts.down_proj`). bitsandbytes only replaces `nn.Linear` modules, so a "4-bit" Mixtral keeps all its experts
(~95% of the weights) in 16-bit. When a model is loaded with a bitsandbytes config, the kit Mixtral classes build the
experts as one `nn.Linear` triple per expert instead (the transformers 4.x layout, `experts.N.w1/w2/w3`), which
bitsandbytes replaces with `Linear4bit`/`Linear8bitLt` as it does for every other projection.

Checkpoints come in two layouts; both load into the per-expert modules through transformers' weight-conversion
machinery, tensor by tensor, so the quantize-on-load path of bitsandbytes stays streaming:
- 4.x / native layout (`block_sparse_moe.experts.N.w1.weight`, ...): a plain rename to `mlp.experts.N.w1.weight`;
- 5.x fused layout (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`): `UnfuseExperts` splits each fused tensor
  into per-expert weights before they are quantized.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.core_model_loading import ConversionOps, WeightConverter, WeightRenaming, WeightTransform

from ..formats import names


def experts_need_linear_layers(config: Any) -> bool:
    """Whether `config` asks for a bitsandbytes quantization, which only reaches experts held in `nn.Linear`s."""
    quantization_config = getattr(config, "quantization_config", None)
    if quantization_config is None:
        return False
    if isinstance(quantization_config, dict):
        method = quantization_config.get("quant_method")
    else:
        method = getattr(quantization_config, "quant_method", None)
    return str(getattr(method, "value", method)) == "bitsandbytes"


class MixtralExpertMLP(nn.Module):
    """One Mixtral expert: `w2(act(w1(x)) * w3(x))`, named as in Mistral's and transformers 4.x checkpoints."""

    def __init__(self, config: Any):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states))


class MixtralExpertLinears(nn.ModuleList):
    """Drop-in for `MixtralExperts` (same call signature) holding one `MixtralExpertMLP` per expert."""

    def __init__(self, config: Any):
        super().__init__(MixtralExpertMLP(config) for _ in range(config.num_local_experts))

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
            "A bitsandbytes-quantized kit Mixtral loaded from a fused (transformers 5.x) checkpoint cannot be saved "
            "back in that layout: pass `save_original_format=False` to `save_pretrained`, or save the unquantized "
            "model."
        )


def per_expert_conversion_mapping() -> list[WeightTransform]:
    """Load both checkpoint layouts into `MixtralExpertLinears` (module path `mlp.experts.N.w1`), from the tensor
    table (`formats.names`): the 4.x module path renamed to 5.x's, and each 5.x fused tensor split per expert."""
    router = next(row for row in names.TENSORS if row.role == names.ROUTER)
    old, new = router.hf.split(".")[3], router.hf_also[0].split(".")[3]  # block_sparse_moe, mlp
    mapping: list[WeightTransform] = [WeightRenaming(f".{old}.", f".{new}.")]
    fused = {row.hf_fused: names.fused_parts(row) for row in names.TENSORS if row.hf_fused is not None}
    for name, parts in fused.items():
        modules = tuple(names.per_expert_module(row) for row in parts)
        source = "." + name.split(f".{new}.", 1)[1]  # .experts.gate_up_proj
        target = f".experts.0.{modules[0]}.weight"
        mapping.append(WeightConverter(source, target, operations=[UnfuseExperts(modules)]))
    return mapping
