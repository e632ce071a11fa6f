"""The kit's model types registered with transformers' Auto classes and weight-conversion mappings.

`FAMILY` lists the kit's classes per architecture (one row each, as `architectures.ARCHITECTURES`); registration,
`to_kit_config` and the kit's Auto classes are derived from it. Only the kit's own keys are registered: transformers'
built-in entries (`mistral`, `mixtral`, `mistral3`, ...) keep pointing at transformers' classes. An architecture
the installed transformers does not define (mistral_large4 before 5.2x) has no row: `kit_config_class` then raises
`UnsupportedArchitectureError`, naming the transformers version needed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
)
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from ..architectures import ARCHITECTURES, Architecture, find_architecture
from .base import kit_config_for, to_kit_config, upstream_architecture
from .experts import merge_converters, per_expert_conversion_mapping, unfuse_converters
from .ministral import (
    KitMinistralConfig,
    KitMinistralForCausalLM,
    KitMinistralForSequenceClassification,
    KitMinistralModel,
)
from .ministral3 import (
    KitMinistral3Config,
    KitMinistral3ForCausalLM,
    KitMinistral3ForSequenceClassification,
    KitMinistral3Model,
)
from .mistral import KitMistralConfig, KitMistralForCausalLM, KitMistralForSequenceClassification, KitMistralModel
from .mistral3 import KitMistral3Config, KitMistral3ForConditionalGeneration, KitMistral3Model
from .mistral4 import (
    KitMistral4Config,
    KitMistral4ForCausalLM,
    KitMistral4ForSequenceClassification,
    KitMistral4Model,
    KitMistral4PerExpertModel,
)
from .mixtral import (
    KitMixtralConfig,
    KitMixtralForCausalLM,
    KitMixtralForSequenceClassification,
    KitMixtralModel,
    KitMixtralPerExpertModel,
)


class UnsupportedArchitectureError(ValueError):
    """A Mistral-family architecture the installed transformers does not define."""


class KitClasses(NamedTuple):
    config: type
    base: type
    causal_lm: type | None  # None: `AutoModelForCausalLM` loads the wrapper's text model (mistral3)
    sequence_classification: type | None = None
    image_text_to_text: type | None = None


FAMILY_LIST = [
    KitClasses(KitMistralConfig, KitMistralModel, KitMistralForCausalLM, KitMistralForSequenceClassification),
    KitClasses(KitMixtralConfig, KitMixtralModel, KitMixtralForCausalLM, KitMixtralForSequenceClassification),
    KitClasses(KitMinistralConfig, KitMinistralModel, KitMinistralForCausalLM, KitMinistralForSequenceClassification),
    KitClasses(
        KitMinistral3Config, KitMinistral3Model, KitMinistral3ForCausalLM, KitMinistral3ForSequenceClassification
    ),
    # transformers maps mistral4 to its causal LM for image-text-to-text (and not for causal LM): the kit does both.
    KitClasses(
        KitMistral4Config,
        KitMistral4Model,
        KitMistral4ForCausalLM,
        KitMistral4ForSequenceClassification,
        KitMistral4ForCausalLM,
    ),
    KitClasses(KitMistral3Config, KitMistral3Model, None, None, KitMistral3ForConditionalGeneration),
]
# Per-expert base models (bitsandbytes) and the conversion mapping each loads with, looked up by class name.
PER_EXPERT_MAPPINGS: dict[str, Any] = {
    KitMixtralPerExpertModel.__name__: per_expert_conversion_mapping,
    KitMistral4PerExpertModel.__name__: unfuse_converters,
}

if "mistral_large4" in CONFIG_MAPPING_NAMES:
    from .mistral_large4 import (
        KitMistralLarge4Config,
        KitMistralLarge4ForConditionalGeneration,
        KitMistralLarge4Model,
        KitMistralLarge4TextConfig,
        KitMistralLarge4TextModel,
        KitMistralLarge4TextPerExpertModel,
        per_expert_text_conversion_mapping,
    )

    # No text-only causal LM exists: the wrapper is the causal LM, as transformers does for Gemma 3.
    FAMILY_LIST.append(
        KitClasses(
            KitMistralLarge4Config,
            KitMistralLarge4Model,
            KitMistralLarge4ForConditionalGeneration,
            None,
            KitMistralLarge4ForConditionalGeneration,
        )
    )
    # The text sub-model's own kit type (not an architecture of its own: no row in `architectures`).
    TEXT_MODELS: tuple[tuple[type, type], ...] = ((KitMistralLarge4TextConfig, KitMistralLarge4TextModel),)
    PER_EXPERT_MAPPINGS[KitMistralLarge4TextPerExpertModel.__name__] = per_expert_text_conversion_mapping
else:
    TEXT_MODELS = ()

FAMILY: tuple[KitClasses, ...] = tuple(FAMILY_LIST)
del FAMILY_LIST


def family_row(model_type: str | None) -> KitClasses | None:
    """The kit classes of a transformers or kit `model_type` (None for models outside the family)."""
    architecture = find_architecture(model_type)
    if architecture is None:
        return None
    row = next((row for row in FAMILY if row.config.model_type == architecture.kit_model_type), None)
    if row is None:
        raise UnsupportedArchitectureError(_unsupported(architecture))
    return row


def _unsupported(architecture: Architecture) -> str:
    needed = architecture.needs_transformers or transformers.__version__
    return (
        f"{architecture.model_type} checkpoints need a transformers release that defines {architecture.model_type} "
        f"(the kit is tested with transformers {needed}); the installed transformers {transformers.__version__} "
        f"does not: pip install -U 'transformers>={needed}'."
    )


def kit_config_class(model_type: str | None) -> type | None:
    """The kit config class of a transformers or kit `model_type` (None for models outside the family; raises
    `UnsupportedArchitectureError` for an architecture the installed transformers lacks)."""
    row = family_row(model_type)
    return None if row is None else row.config


def unsupported_architectures() -> tuple[str, ...]:
    """The family's model types the installed transformers does not define."""
    kit_types = {row.config.model_type for row in FAMILY}
    return tuple(row.model_type for row in ARCHITECTURES if row.kit_model_type not in kit_types)


__all__ = [
    "FAMILY",
    "KitClasses",
    "UnsupportedArchitectureError",
    "family_row",
    "kit_config_class",
    "kit_config_for",
    "register",
    "to_kit_config",
    "unsupported_architectures",
]

_registered = False


def register() -> None:
    """Register the kit model types with transformers' Auto classes and weight-conversion mappings.

    Idempotent, and run when `hf_mistral_kit.modeling` is imported (by anything that uses the kit's model or Auto
    classes). Only the kit's own keys are registered: transformers' built-in entries keep pointing at transformers'
    classes.
    """
    global _registered
    if _registered:
        return
    for row in FAMILY:
        AutoConfig.register(row.config.model_type, row.config, exist_ok=True)
        AutoModel.register(row.config, row.base, exist_ok=True)
        for auto_class, model_class in (
            (AutoModelForCausalLM, row.causal_lm),
            (AutoModelForSequenceClassification, row.sequence_classification),
            (AutoModelForImageTextToText, row.image_text_to_text),
        ):
            if model_class is not None:
                auto_class.register(row.config, model_class, exist_ok=True)
    for config_class, model_class in TEXT_MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)

    # Looked up by the class name of the base model inside any kit mixture of experts, so each experts layout gets
    # its own: upstream's, or the per-expert one (`experts`).
    register_checkpoint_conversion_mapping(
        KitMixtralModel.__name__,
        get_checkpoint_conversion_mapping(KitMixtralConfig.upstream_model_type),
        overwrite=True,
    )
    # mistral4: per-expert checkpoints (Mistral's native layout, as the kit reads it) merge into the fused experts on
    # load; saves keep the fused layout, the only one transformers' own class reads.
    register_checkpoint_conversion_mapping(KitMistral4Model.__name__, merge_converters(load_only=True), overwrite=True)
    for class_name, mapping in PER_EXPERT_MAPPINGS.items():
        register_checkpoint_conversion_mapping(class_name, mapping(), overwrite=True)
    # The wrappers' own renames (mistral3: the legacy llava layout; mistral_large4: Mistral's native layout), by
    # their kit model types, and the text models' with a type of their own (by class name, as the per-expert
    # subclass has its own); the other text models bring theirs (above).
    for row in FAMILY:
        if find_architecture(row.config.model_type).vision:
            mapping = get_checkpoint_conversion_mapping(row.config.upstream_model_type)
            register_checkpoint_conversion_mapping(row.config.model_type, mapping, overwrite=True)
    for config_class, model_class in TEXT_MODELS:
        mapping = get_checkpoint_conversion_mapping(config_class.upstream_model_type)
        register_checkpoint_conversion_mapping(model_class.__name__, mapping, overwrite=True)
    # And what transformers registers by class name (e.g. 5.10's `Mistral3Model`), under the kit class's name.
    for row in FAMILY:
        for model_class in {row.base, row.causal_lm, row.image_text_to_text} - {None}:
            mapping = get_checkpoint_conversion_mapping(upstream_architecture(model_class.__name__))
            if mapping and model_class.__name__ not in PER_EXPERT_MAPPINGS:
                register_checkpoint_conversion_mapping(model_class.__name__, mapping, overwrite=True)
    _registered = True
