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
    latent_attention: bool = False  # multi-head latent attention (MLA): q/kv LoRA projections, a latent KV cache
    vision: bool = False  # a vision-language wrapper: the text model is its `text_config`, beside a vision tower
    # A wrapper whose text model has its own transformers model type and no causal-LM class (mistral_large4_text):
    # the whole wrapper is the causal LM. None where `text_config` is another row's config (mistral3) or no wrapper.
    text_model_type: str | None = None
    # The transformers release the kit's support was verified with, for an architecture older releases lack (the
    # error of a kit Auto class on such a release names it). None: every supported release has it.
    needs_transformers: str | None = None
    # Whether transformers' class runs attn_implementation="flash_attention_2" (its `_supports_flash_attn`): the
    # presets fall back to sdpa where it does not.
    flash_attention: bool = True


ARCHITECTURES: tuple[Architecture, ...] = (
    # 2023-24: Mistral 7B, Mixtral.
    Architecture("mistral", "hf_mistral_kit_mistral", "MistralForCausalLM", experts=False),
    Architecture("mixtral", "hf_mistral_kit_mixtral", "MixtralForCausalLM", experts=True),
    # Ministral-8B-2410 (interleaved sliding-window layers).
    Architecture("ministral", "hf_mistral_kit_ministral", "MinistralForCausalLM", experts=False),
    # Ministral 3 (text), and the text model of Mistral Small 3.x-era vision releases.
    Architecture("ministral3", "hf_mistral_kit_ministral3", "Ministral3ForCausalLM", experts=False),
    # Mistral Small 4: 128 routed experts + a shared one, multi-head latent attention.
    Architecture("mistral4", "hf_mistral_kit_mistral4", "Mistral4ForCausalLM", experts=True, latent_attention=True),
    # Mistral Small 3.1/3.2, Magistral, Devstral, Ministral 3, Small 4 releases with vision: a wrapper whose
    # `text_config` is a mistral, ministral3 or mistral4 config.
    Architecture("mistral3", "hf_mistral_kit_mistral3", "Mistral3ForConditionalGeneration", experts=False, vision=True),
    # The Large line: MoE + MLA + an attention indexer, shipped only with vision (transformers >= 5.2x).
    Architecture(
        "mistral_large4",
        "hf_mistral_kit_mistral_large4",
        "MistralLarge4ForConditionalGeneration",
        experts=True,
        latent_attention=True,
        vision=True,
        text_model_type="mistral_large4_text",
        needs_transformers="5.25",
        flash_attention=False,  # transformers 5.25: "flash-mla kernels need a bit more work"
    ),
)

# transformers model types of the family, the kit's in-memory ones included.
MODEL_TYPES: tuple[str, ...] = tuple(name for row in ARCHITECTURES for name in (row.model_type, row.kit_model_type))


def find_architecture(model_type: str | None) -> Architecture | None:
    """The row of a transformers or kit `model_type` (None for any other model)."""
    return next((row for row in ARCHITECTURES if model_type in (row.model_type, row.kit_model_type)), None)


def find_text_model_architecture(model_type: str | None) -> Architecture | None:
    """The row a text model's `model_type` belongs to: its own, or that of the wrapper it is the text model of
    (`mistral_large4_text`); None for any other model."""
    return find_architecture(model_type) or next(
        (row for row in ARCHITECTURES if model_type is not None and model_type == row.text_model_type), None
    )


def architecture(model_type: str) -> Architecture:
    """The row of a transformers or kit `model_type` of the family (KeyError for any other)."""
    row = find_architecture(model_type)
    if row is None:
        raise KeyError(f"{model_type!r} is not an architecture of the Mistral family.")
    return row
