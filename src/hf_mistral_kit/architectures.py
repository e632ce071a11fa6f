"""The model architectures of the family the kit loads: ONE row each.

Every place that asks "is this a Mistral-family config?", "which transformers class does this checkpoint become?" or
"does it have experts?" derives the answer from `ARCHITECTURES`: the translation of Mistral's native `params.json` and
of GGUF metadata, the hyperparameter checks, the kit's own model types and its Auto classes. A new architecture is
one row here, its tensors in `hf_mistral_kit.formats.names`, and its classes in `hf_mistral_kit.modeling`.

Nothing here imports anything but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    model_type: str  # transformers' model_type (written into every config.json the kit saves)
    kit_model_type: str  # the kit's own model_type, registered beside transformers' (never replacing it)
    causal_lm: str  # transformers' causal-LM class, config.json's `architectures`
    experts: bool  # a sparse mixture of experts: `moe` in params.json, `expert_count` in GGUF metadata


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("mistral", "hf_mistral_kit_mistral", "MistralForCausalLM", experts=False),
    Architecture("mixtral", "hf_mistral_kit_mixtral", "MixtralForCausalLM", experts=True),
)

# transformers model types of the family, the kit's in-memory ones included.
MODEL_TYPES: tuple[str, ...] = tuple(name for row in ARCHITECTURES for name in (row.model_type, row.kit_model_type))


def find_architecture(model_type: str | None) -> Architecture | None:
    """The row of a transformers or kit `model_type` (None for any other model)."""
    return next((row for row in ARCHITECTURES if model_type in (row.model_type, row.kit_model_type)), None)


def architecture_with_experts(experts: bool) -> Architecture:
    """The architecture a native params.json or a GGUF file describes: with or without experts."""
    return next(row for row in ARCHITECTURES if row.experts == experts)
