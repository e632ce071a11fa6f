"""The kit's model types registered with transformers' Auto classes and weight-conversion mappings.

`FAMILY` lists the kit's classes per architecture (one row each, as `architectures.ARCHITECTURES`); registration,
`to_kit_config` and the kit's Auto classes are derived from it. Only the kit's own keys are registered: transformers'
built-in `mistral`/`mixtral` entries keep pointing at transformers' classes.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..architectures import find_architecture
from .experts import per_expert_conversion_mapping
from .mistral import KitMistralConfig, KitMistralForCausalLM, KitMistralForSequenceClassification, KitMistralModel
from .mixtral import (
    KitMixtralConfig,
    KitMixtralForCausalLM,
    KitMixtralForSequenceClassification,
    KitMixtralModel,
    KitMixtralPerExpertModel,
)


class KitClasses(NamedTuple):
    config: type
    base: type
    causal_lm: type
    sequence_classification: type


FAMILY: tuple[KitClasses, ...] = (
    KitClasses(KitMistralConfig, KitMistralModel, KitMistralForCausalLM, KitMistralForSequenceClassification),
    KitClasses(KitMixtralConfig, KitMixtralModel, KitMixtralForCausalLM, KitMixtralForSequenceClassification),
)


def kit_config_class(model_type: str | None) -> type | None:
    """The kit config class of a transformers or kit `model_type` (None for models outside the family)."""
    architecture = find_architecture(model_type)
    if architecture is None:
        return None
    return next(row.config for row in FAMILY if row.config.model_type == architecture.kit_model_type)


def to_kit_config(config: Any) -> KitMistralConfig | KitMixtralConfig:
    """The kit config equivalent to a `MistralConfig`/`MixtralConfig` (kit configs are returned as they are)."""
    kit_class = kit_config_class(config.model_type)
    if kit_class is None:
        raise ValueError(f"Expected a Mistral or Mixtral config, got model_type {config.model_type!r}.")
    if isinstance(config, kit_class):
        return config
    # Same fields, other class: a re-typed copy keeps runtime state `to_dict` drops (attn implementation...).
    kit_config = copy.deepcopy(config)
    kit_config.__class__ = kit_class
    kit_config.__dict__.pop("model_type", None)  # set by `from_dict` on configs read from config.json
    return kit_config


_registered = False


def register() -> None:
    """Register the kit model types with transformers' Auto classes and weight-conversion mappings.

    Idempotent, and run when `hf_mistral_kit.modeling` is imported (by anything that uses the kit's model or Auto
    classes). Only the kit's own keys are registered: transformers' built-in `mistral`/`mixtral` entries keep pointing
    at transformers' classes.
    """
    global _registered
    if _registered:
        return
    for row in FAMILY:
        AutoConfig.register(row.config.model_type, row.config, exist_ok=True)
        AutoModel.register(row.config, row.base, exist_ok=True)
        AutoModelForCausalLM.register(row.config, row.causal_lm, exist_ok=True)
        AutoModelForSequenceClassification.register(row.config, row.sequence_classification, exist_ok=True)
    # Looked up by the class name of the base model inside any kit Mixtral, so each experts layout gets its own:
    # upstream's (4.x per-expert checkpoints merged into fused experts) or the per-expert one (`experts`).
    register_checkpoint_conversion_mapping(
        KitMixtralModel.__name__,
        get_checkpoint_conversion_mapping(KitMixtralConfig.upstream_model_type),
        overwrite=True,
    )
    register_checkpoint_conversion_mapping(
        KitMixtralPerExpertModel.__name__, per_expert_conversion_mapping(), overwrite=True
    )
    _registered = True
