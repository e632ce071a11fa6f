"""Mistral Small 4 (`mistral4`: multi-head latent attention, routed experts and a shared one): the kit's classes.

Besides what every kit class adds (`base`): under a bitsandbytes config the routed experts are built as per-expert
`nn.Linear`s (`experts`, sized with `moe_intermediate_size`), loaded from fused 5.x checkpoints and from per-expert
ones alike; otherwise the fused experts and transformers' `grouped_mm` kernel are kept, and per-expert checkpoints
are merged into them (transformers has no conversion mapping for mistral4, so its own class loads the fused layout
only). transformers' `AutoModelForCausalLM` has no mistral4 entry; the kit's has.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import Mistral4Config
from transformers.models.mistral4.modeling_mistral4 import (
    Mistral4ForCausalLM,
    Mistral4ForSequenceClassification,
    Mistral4Model,
    Mistral4PreTrainedModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin
from .experts import experts_need_linear_layers, use_linear_experts

ARCHITECTURE = find_architecture("mistral4")


class KitMistral4Config(KitConfigMixin, Mistral4Config):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type


class KitMistral4PreTrainedModel(KitModelMixin, Mistral4PreTrainedModel):
    config_class = KitMistral4Config

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # As for Mixtral (`mixtral`): transformers greps the defining module's source; the experts are upstream's.
        return Mistral4Model._can_set_experts_implementation()


class KitMistral4Model(KitMistral4PreTrainedModel, Mistral4Model):
    """Mistral4 base model; under a bitsandbytes config it is built as `KitMistral4PerExpertModel` (see
    `KitMixtralModel`: the choice made in `__new__` reaches every way of building it, and picks the conversion
    mapping, which transformers looks up by class name)."""

    config_class = KitMistral4Config

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any):
        if cls is KitMistral4Model and config is not None and experts_need_linear_layers(config):
            cls = KitMistral4PerExpertModel
        return super().__new__(cls)


class KitMistral4PerExpertModel(KitMistral4Model):
    """Mistral4 base model whose routed experts are `nn.Linear`s per expert (`mlp.experts.N.w1/w2/w3`)."""

    def post_init(self):
        use_linear_experts(self)
        super().post_init()


class KitMistral4ForCausalLM(KitMistral4PreTrainedModel, Mistral4ForCausalLM):
    config_class = KitMistral4Config

    def __init__(self, config: KitMistral4Config):
        # `Mistral4ForCausalLM.__init__`, holding the kit base model (which picks the experts layout).
        super(Mistral4ForCausalLM, self).__init__(config)
        self.model = KitMistral4Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


class KitMistral4ForSequenceClassification(KitMistral4PreTrainedModel, Mistral4ForSequenceClassification):
    config_class = KitMistral4Config  # the base model comes from `AutoModel.from_config`: `KitMistral4Model`
