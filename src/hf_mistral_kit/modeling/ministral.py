"""Ministral (Ministral-8B-2410: sliding-window layers interleaved with full-attention ones): the kit's classes.

The one difference from `mistral`: transformers' `MinistralConfig` leaves `head_dim` unset when config.json has
none (its `__post_init__` skips MistralConfig's default), and then no model can be built; the kit config fills in
`hidden_size // num_attention_heads`, as Mistral does, and saves it.
"""

from __future__ import annotations

from torch import nn
from transformers import MinistralConfig
from transformers.models.ministral.modeling_ministral import (
    MinistralForCausalLM,
    MinistralForSequenceClassification,
    MinistralModel,
    MinistralPreTrainedModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin

ARCHITECTURE = find_architecture("ministral")


class KitMinistralConfig(KitConfigMixin, MinistralConfig):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type

    def _kit_retyped(self) -> None:
        if getattr(self, "head_dim", None) is None:
            self.head_dim = self.hidden_size // self.num_attention_heads


class KitMinistralPreTrainedModel(KitModelMixin, MinistralPreTrainedModel):
    config_class = KitMinistralConfig


class KitMinistralModel(KitMinistralPreTrainedModel, MinistralModel):
    config_class = KitMinistralConfig


class KitMinistralForCausalLM(KitMinistralPreTrainedModel, MinistralForCausalLM):
    config_class = KitMinistralConfig

    def __init__(self, config: KitMinistralConfig):
        # `MinistralForCausalLM.__init__`, holding the kit base model.
        super(MinistralForCausalLM, self).__init__(config)
        self.model = KitMinistralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


class KitMinistralForSequenceClassification(KitMinistralPreTrainedModel, MinistralForSequenceClassification):
    config_class = KitMinistralConfig  # the base model comes from `AutoModel.from_config`: `KitMinistralModel`
