"""Mistral 3 (`mistral3`): the vision-language wrapper of Mistral Small 3.1/3.2, Magistral, Devstral, Ministral 3
and Mistral Small 4 releases. Its text model is a `mistral`, `ministral3` or `mistral4` config (`text_config`).

What the kit's classes add to transformers' own (besides `base`):
- the text config is the kit's config of its type, so the language model inside the wrapper is the kit's class (a
  mistral4 text model gets its experts quantized under bitsandbytes: the wrapper tells its text config);
- `KitMistral3Config.text_model_config()`: the text model alone, as `hf_mistral_kit.AutoModelForCausalLM` loads it
  from a mistral3 checkpoint (no vision tower, no projector), with `TEXT_KEY_MAPPING` renaming both save layouts of
  the wrapper (`language_model.model.*` / `language_model.lm_head`, and `model.language_model.*` / `lm_head`).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from transformers import Mistral3Config
from transformers.models.mistral3.modeling_mistral3 import (
    Mistral3ForConditionalGeneration,
    Mistral3Model,
    Mistral3PreTrainedModel,
)

from ..architectures import find_architecture
from .base import (
    IGNORED_CHECKPOINT_KEYS,
    KitConfigMixin,
    KitModelMixin,
    kit_text_config,
    ready_language_model_config,
    to_kit_config,
)
from .quantization import EXPERTS_AS_LINEARS

ARCHITECTURE = find_architecture("mistral3")

# A vision-language wrapper's checkpoint, read as its text model: the language model's tensors in either save layout
# of the wrapper (transformers' `llava` conversion mapping writes the first); the vision tower's and projector's match
# nothing and are not loaded.
TEXT_KEY_MAPPING = {
    r"^language_model\.lm_head\.": "lm_head.",
    r"^language_model\.model\.": "model.",
    r"^model\.language_model\.": "model.",
}
# What a text model loaded from a wrapper's checkpoint leaves out (not loaded, not kept).
VISION_KEYS = (r"^(model\.)?vision_tower\.", r"^(model\.)?multi_modal_projector\.")


class KitMistral3Config(KitConfigMixin, Mistral3Config):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type
    text_key_mapping = TEXT_KEY_MAPPING

    def _kit_retyped(self) -> None:
        self.text_config = kit_text_config(self.text_config)

    def text_model_config(self) -> Any:
        """The kit config of the text model alone: `text_config`, tying its output head to the embeddings as the
        wrapper does (the wrapper's `tie_word_embeddings`; a checkpoint's own different `lm_head` is kept either way),
        with the wrapper's quantization config (a quantized checkpoint) and name; the model it builds leaves the
        checkpoint's vision tower and projector out."""
        text = copy.deepcopy(self.text_config)
        text.__dict__.pop(EXPERTS_AS_LINEARS, None)
        text.tie_word_embeddings = self.tie_word_embeddings
        if getattr(self, "quantization_config", None) is not None:
            text.quantization_config = copy.deepcopy(self.quantization_config)
        text._name_or_path = self._name_or_path
        setattr(text, IGNORED_CHECKPOINT_KEYS, VISION_KEYS)
        return to_kit_config(text)


class KitMistral3PreTrainedModel(KitModelMixin, Mistral3PreTrainedModel):
    config_class = KitMistral3Config


class KitMistral3Model(KitMistral3PreTrainedModel, Mistral3Model):
    config_class = KitMistral3Config

    def __init__(self, config: KitMistral3Config):
        # The language model comes from `AutoModel.from_config(config.text_config)`: the kit's class of its type,
        # which builds its experts as linear layers when the wrapper is quantized.
        ready_language_model_config(config)
        super().__init__(config)


class KitMistral3ForConditionalGeneration(KitMistral3PreTrainedModel, Mistral3ForConditionalGeneration):
    config_class = KitMistral3Config

    def __init__(self, config: KitMistral3Config):
        # `Mistral3ForConditionalGeneration.__init__`, holding the kit base model.
        super(Mistral3ForConditionalGeneration, self).__init__(config)
        self.model = KitMistral3Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
