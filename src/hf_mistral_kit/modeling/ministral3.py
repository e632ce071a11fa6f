"""Ministral 3 (the text model of Ministral 3 and of several Mistral Small 3.x-era releases): the kit's classes,
thin subclasses of transformers' own (see `base`)."""

from __future__ import annotations

from torch import nn
from transformers import Ministral3Config
from transformers.models.ministral3.modeling_ministral3 import (
    Ministral3ForCausalLM,
    Ministral3ForSequenceClassification,
    Ministral3Model,
    Ministral3PreTrainedModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin

ARCHITECTURE = find_architecture("ministral3")


class KitMinistral3Config(KitConfigMixin, Ministral3Config):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type


class KitMinistral3PreTrainedModel(KitModelMixin, Ministral3PreTrainedModel):
    config_class = KitMinistral3Config


class KitMinistral3Model(KitMinistral3PreTrainedModel, Ministral3Model):
    config_class = KitMinistral3Config


class KitMinistral3ForCausalLM(KitMinistral3PreTrainedModel, Ministral3ForCausalLM):
    config_class = KitMinistral3Config

    def __init__(self, config: KitMinistral3Config):
        # `Ministral3ForCausalLM.__init__`, holding the kit base model.
        super(Ministral3ForCausalLM, self).__init__(config)
        self.model = KitMinistral3Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


class KitMinistral3ForSequenceClassification(KitMinistral3PreTrainedModel, Ministral3ForSequenceClassification):
    config_class = KitMinistral3Config  # the base model comes from `AutoModel.from_config`: `KitMinistral3Model`
