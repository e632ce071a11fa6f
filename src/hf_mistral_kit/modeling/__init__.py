"""The kit's config and model classes for the family, registered under the kit's own model types.

One module per architecture (`mistral`, `mixtral`, `ministral`, `ministral3`, `mistral4`, `mistral3`,
`mistral_large4`) holding only its difference, over what they share (`base`), the routed experts as linear layers
(`experts`), what bitsandbytes quantizes and what it skips (`quantization`), and the registration with transformers'
Auto classes (`registration`), which runs when this package is imported: the kit's classes never exist
unregistered, so a kit Auto class always resolves after it. A new architecture is a module here and a row of
`registration.FAMILY`. `mistral_large4` exists only where transformers defines it (5.2x).
"""

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
from .quantization import UNQUANTIZED_MODULES
from .registration import UnsupportedArchitectureError, register, to_kit_config

__all__ = [
    "KitMinistral3Config",
    "KitMinistral3ForCausalLM",
    "KitMinistral3ForSequenceClassification",
    "KitMinistral3Model",
    "KitMinistralConfig",
    "KitMinistralForCausalLM",
    "KitMinistralForSequenceClassification",
    "KitMinistralModel",
    "KitMistral3Config",
    "KitMistral3ForConditionalGeneration",
    "KitMistral3Model",
    "KitMistral4Config",
    "KitMistral4ForCausalLM",
    "KitMistral4ForSequenceClassification",
    "KitMistral4Model",
    "KitMistral4PerExpertModel",
    "KitMistralConfig",
    "KitMistralForCausalLM",
    "KitMistralForSequenceClassification",
    "KitMistralModel",
    "KitMixtralConfig",
    "KitMixtralForCausalLM",
    "KitMixtralForSequenceClassification",
    "KitMixtralModel",
    "KitMixtralPerExpertModel",
    "UNQUANTIZED_MODULES",
    "UnsupportedArchitectureError",
    "register",
    "to_kit_config",
]

register()  # the kit's classes never exist unregistered: a kit Auto class resolves only after this
