"""The kit's config and model classes for the family, registered under the kit's own model types.

One module per architecture (`mistral`, `mixtral`) over what they share (`base`), Mixtral's experts as linears
(`experts`), and the registration with transformers' Auto classes (`registration`), which runs when this package is
imported: the kit's classes never exist unregistered, so a kit Auto class always resolves after it. A new
architecture is a module here and a row of `registration.FAMILY`.
"""

from .mistral import KitMistralConfig, KitMistralForCausalLM, KitMistralForSequenceClassification, KitMistralModel
from .mixtral import (
    KitMixtralConfig,
    KitMixtralForCausalLM,
    KitMixtralForSequenceClassification,
    KitMixtralModel,
    KitMixtralPerExpertModel,
)
from .registration import register, to_kit_config

__all__ = [
    "KitMistralConfig",
    "KitMistralForCausalLM",
    "KitMistralForSequenceClassification",
    "KitMistralModel",
    "KitMixtralConfig",
    "KitMixtralForCausalLM",
    "KitMixtralForSequenceClassification",
    "KitMixtralModel",
    "KitMixtralPerExpertModel",
    "register",
    "to_kit_config",
]

register()  # the kit's classes never exist unregistered: a kit Auto class resolves only after this
