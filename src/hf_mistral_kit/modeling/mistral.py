"""Mistral (dense): the kit's config and model classes, thin subclasses of transformers' own (see `base`)."""

from __future__ import annotations

from torch import nn
from transformers import MistralConfig
from transformers.models.mistral.modeling_mistral import (
    MistralForCausalLM,
    MistralForSequenceClassification,
    MistralModel,
    MistralPreTrainedModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin

ARCHITECTURE = find_architecture("mistral")


class KitMistralConfig(KitConfigMixin, MistralConfig):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type


class KitMistralPreTrainedModel(KitModelMixin, MistralPreTrainedModel):
    config_class = KitMistralConfig


class KitMistralModel(KitMistralPreTrainedModel, MistralModel):
    config_class = KitMistralConfig


class KitMistralForCausalLM(KitMistralPreTrainedModel, MistralForCausalLM):
    config_class = KitMistralConfig

    def __init__(self, config: KitMistralConfig):
        # `MistralForCausalLM.__init__`, holding the kit base model.
        super(MistralForCausalLM, self).__init__(config)
        self.model = KitMistralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


class KitMistralForSequenceClassification(KitMistralPreTrainedModel, MistralForSequenceClassification):
    config_class = KitMistralConfig  # the base model comes from `AutoModel.from_config`: `KitMistralModel`
