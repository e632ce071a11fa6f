"""What a bitsandbytes load of a kit model quantizes, and what it keeps in the compute dtype: the ONE skip list.

Quantized: the decoder layers' linear layers, i.e. attention (q/k/v/o, and multi-head latent attention's
`q_a_proj`/`q_b_proj`/`kv_a_proj_with_mqa`/`kv_b_proj`/`o_proj`), the dense MLPs, the shared experts and the routed
experts (built as per-expert `nn.Linear`s under bitsandbytes: `experts`).

Kept in the compute dtype (`UNQUANTIZED_MODULES`): the output head (`lm_head`, a sequence classifier's `score`), the
vision tower and the multi-modal projector of the vision-language wrappers (a small share of the weights, and the
image features feed every text token), and mistral_large4's attention indexer (it selects the tokens each query
attends to, so its errors change which tokens are seen at all). Routers (`mlp.gate`: mistral_large4 keeps its own
in float32), norms and embeddings are not `nn.Linear`s, which bitsandbytes never replaces.

The list reaches transformers as the bitsandbytes config's `llm_int8_skip_modules` (unless the caller sets one), so
it is saved with the model and a reload in plain transformers keeps the same modules unquantized. The patterns are
regular expressions anchored at the start of a module's full name, which both transformers 5.10 and 5.25 accept.
"""

from __future__ import annotations

import copy
from typing import Any

# The vision tower and projector of a vision-language wrapper (also what LoRA leaves out: `loading.lora_config`).
VISION_MODULES: tuple[str, ...] = (r".*vision_tower", r".*multi_modal_projector")
UNQUANTIZED_MODULES: tuple[str, ...] = ("lm_head", "score", *VISION_MODULES, r".*\.self_attn\.indexer")

# A (not serialized) flag a vision-language wrapper sets on its text config when the wrapper is loaded with
# bitsandbytes: the text model then builds its experts as linear layers too (the quantization config lives on the
# wrapper's config only).
EXPERTS_AS_LINEARS = "_kit_experts_as_linears"


def is_bitsandbytes(quantization_config: Any) -> bool:
    if quantization_config is None:
        return False
    if isinstance(quantization_config, dict):
        method = quantization_config.get("quant_method")
    else:
        method = getattr(quantization_config, "quant_method", None)
    return str(getattr(method, "value", method)) == "bitsandbytes"


def experts_need_linear_layers(config: Any) -> bool:
    """Whether `config` asks for a bitsandbytes quantization, which only reaches experts held in `nn.Linear`s."""
    return bool(getattr(config, EXPERTS_AS_LINEARS, False)) or is_bitsandbytes(
        getattr(config, "quantization_config", None)
    )


def with_unquantized_modules(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` kwargs whose bitsandbytes config (if any) skips `UNQUANTIZED_MODULES` (a copy: the
    caller's config object is left alone; a skip list the caller set is kept as it is)."""
    quantization_config = kwargs.get("quantization_config")
    if not is_bitsandbytes(quantization_config):
        return kwargs
    if isinstance(quantization_config, dict):
        if quantization_config.get("llm_int8_skip_modules") is not None:
            return kwargs
        return {
            **kwargs,
            "quantization_config": {**quantization_config, "llm_int8_skip_modules": list(UNQUANTIZED_MODULES)},
        }
    if getattr(quantization_config, "llm_int8_skip_modules", None) is not None:
        return kwargs
    quantization_config = copy.copy(quantization_config)
    quantization_config.llm_int8_skip_modules = list(UNQUANTIZED_MODULES)
    return {**kwargs, "quantization_config": quantization_config}


def flatten_8bit_inputs(model: Any) -> None:
    """Let bitsandbytes' 8-bit linear layers take inputs of more than 3 dimensions.

    `MatMul8bitLt` (bitsandbytes 0.50, inference) flattens 3-D inputs only, and fails on the 4-D latents multi-head
    latent attention projects (`kv_b_proj` on `[batch, 1, seq, kv_lora_rank]`, mistral4 and mistral_large4): such
    inputs are flattened to 3-D before the layer and its output shaped back after it.
    """
    if not getattr(model, "is_loaded_in_8bit", False):
        return
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_kit_flattens_inputs", False):
            module.register_forward_pre_hook(_flatten_input)
            module.register_forward_hook(_unflatten_output)
            module._kit_flattens_inputs = True


def _flatten_input(module: Any, args: tuple) -> tuple | None:
    (hidden_states, *rest) = args
    module._kit_input_shape = hidden_states.shape[:-1] if hidden_states.dim() > 3 else None
    if module._kit_input_shape is None:
        return None
    return (hidden_states.reshape(1, -1, hidden_states.shape[-1]), *rest)


def _unflatten_output(module: Any, args: tuple, output: Any) -> Any:
    shape, module._kit_input_shape = module._kit_input_shape, None
    return output if shape is None else output.reshape(*shape, output.shape[-1])
