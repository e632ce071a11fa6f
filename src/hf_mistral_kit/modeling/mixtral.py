"""Mixtral (a sparse mixture of experts): the kit's config and model classes, thin subclasses of transformers' own.

Besides what every kit class adds (`base`): under a bitsandbytes config the experts are built as per-expert
`nn.Linear`s that bitsandbytes quantizes (`experts`), from fused 5.x and per-expert 4.x/native checkpoints alike;
otherwise the fused experts and transformers' `grouped_mm` kernel are kept.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import (
    MixtralForCausalLM,
    MixtralForSequenceClassification,
    MixtralModel,
    MixtralPreTrainedModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin
from .experts import experts_need_linear_layers, use_linear_experts

ARCHITECTURE = find_architecture("mixtral")


class KitMixtralConfig(KitConfigMixin, MixtralConfig):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type


class KitMixtralPreTrainedModel(KitModelMixin, MixtralPreTrainedModel):
    config_class = KitMixtralConfig

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # transformers greps the source of the module defining the class for `@use_experts_implementation` and
        # silently falls back to the slow `eager` experts when it is absent. The fused experts here are upstream's
        # `MixtralExperts`, so ask about upstream's module.
        return MixtralModel._can_set_experts_implementation()


class KitMixtralModel(KitMixtralPreTrainedModel, MixtralModel):
    """Mixtral base model; under a bitsandbytes config it is built as `KitMixtralPerExpertModel`.

    The choice is made in `__new__` so that every way of building the base model (`from_pretrained`, `from_config`,
    the heads below) gets it, and so that transformers picks the matching weight-conversion mapping, which it looks
    up by class name.
    """

    config_class = KitMixtralConfig

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any):
        if cls is KitMixtralModel and config is not None and experts_need_linear_layers(config):
            cls = KitMixtralPerExpertModel
        return super().__new__(cls)


class KitMixtralPerExpertModel(KitMixtralModel):
    """Mixtral base model whose experts are `nn.Linear`s per expert (`mlp.experts.N.w1/w2/w3`), for bitsandbytes.

    Its experts run their own loop over the selected experts whatever `config._experts_implementation` says: quantized
    linear layers cannot go through the fused `grouped_mm`/`batched_mm` kernels.
    """

    def post_init(self):
        use_linear_experts(self)
        super().post_init()


class KitMixtralForCausalLM(KitMixtralPreTrainedModel, MixtralForCausalLM):
    config_class = KitMixtralConfig

    def __init__(self, config: KitMixtralConfig):
        # `MixtralForCausalLM.__init__`, holding the kit base model (which picks the experts layout).
        super(MixtralForCausalLM, self).__init__(config)
        self.model = KitMixtralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.router_aux_loss_coef = config.router_aux_loss_coef
        self.num_experts = config.num_local_experts
        self.num_experts_per_tok = config.num_experts_per_tok
        self.post_init()


class KitMixtralForSequenceClassification(KitMixtralPreTrainedModel, MixtralForSequenceClassification):
    config_class = KitMixtralConfig  # the base model comes from `AutoModel.from_config`: `KitMixtralModel`
