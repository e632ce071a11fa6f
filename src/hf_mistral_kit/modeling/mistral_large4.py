"""The Large line (`mistral_large4`: MoE, multi-head latent attention without q-LoRA, an attention indexer; shipped
only as a vision-language `ForConditionalGeneration`): the kit's classes. transformers 5.10 has no mistral_large4;
this module is imported only where transformers defines it (`registration`).

What the kit's classes add (besides `base`): the text model inside the wrapper is the kit's
(`KitMistralLarge4TextModel`), which under bitsandbytes builds its routed experts as per-expert `nn.Linear`s
(`experts`), loaded from Mistral's native per-expert layout (what transformers' conversion mapping reads, and what
`save_pretrained` writes by default) and from the fused HF layout alike. No text-only causal LM exists upstream (the
output head and its logit soft-capping live in the wrapper), so the wrapper is also what
`hf_mistral_kit.AutoModelForCausalLM` loads.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, WeightTransform
from transformers.models.mistral_large4.configuration_mistral_large4 import (
    MistralLarge4Config,
    MistralLarge4TextConfig,
)
from transformers.models.mistral_large4.modeling_mistral_large4 import (
    MistralLarge4ForConditionalGeneration,
    MistralLarge4Model,
    MistralLarge4PreTrainedModel,
    MistralLarge4TextModel,
)

from ..architectures import find_architecture
from .base import KitConfigMixin, KitModelMixin, kit_text_config, ready_language_model_config
from .experts import experts_need_linear_layers, unfuse_converters, use_linear_experts

ARCHITECTURE = find_architecture("mistral_large4")


class KitMistralLarge4TextConfig(KitConfigMixin, MistralLarge4TextConfig):
    model_type = f"{ARCHITECTURE.kit_model_type}_text"
    upstream_model_type = ARCHITECTURE.text_model_type


class KitMistralLarge4Config(KitConfigMixin, MistralLarge4Config):
    model_type = ARCHITECTURE.kit_model_type
    upstream_model_type = ARCHITECTURE.model_type

    def _kit_retyped(self) -> None:
        self.text_config = kit_text_config(self.text_config)


class KitMistralLarge4PreTrainedModel(KitModelMixin, MistralLarge4PreTrainedModel):
    config_class = KitMistralLarge4Config

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # As for Mixtral (`mixtral`): transformers greps the defining module's source; the experts are upstream's.
        return MistralLarge4TextModel._can_set_experts_implementation()


class KitMistralLarge4TextModel(KitMistralLarge4PreTrainedModel, MistralLarge4TextModel):
    """The decoder; under a bitsandbytes config it is built as `KitMistralLarge4TextPerExpertModel` (see
    `KitMixtralModel`)."""

    config_class = KitMistralLarge4TextConfig

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any):
        if cls is KitMistralLarge4TextModel and config is not None and experts_need_linear_layers(config):
            cls = KitMistralLarge4TextPerExpertModel
        return super().__new__(cls)


class KitMistralLarge4TextPerExpertModel(KitMistralLarge4TextModel):
    """The decoder with its routed experts as `nn.Linear`s per expert (`mlp.experts.N.w1/w2/w3`)."""

    def post_init(self):
        use_linear_experts(self)
        super().post_init()


class KitMistralLarge4Model(KitMistralLarge4PreTrainedModel, MistralLarge4Model):
    def __init__(self, config: KitMistralLarge4Config):
        # The language model comes from `AutoModel.from_config(config.text_config)`: the kit's, which builds its
        # experts as linear layers when the wrapper is quantized.
        ready_language_model_config(config)
        super().__init__(config)


class KitMistralLarge4ForConditionalGeneration(KitMistralLarge4PreTrainedModel, MistralLarge4ForConditionalGeneration):
    def __init__(self, config: KitMistralLarge4Config):
        # `MistralLarge4ForConditionalGeneration.__init__`, holding the kit base model.
        super(MistralLarge4ForConditionalGeneration, self).__init__(config)
        self.model = KitMistralLarge4Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.final_logit_softcapping = self.config.get_text_config().final_logit_softcapping
        self.post_init()


def per_expert_text_conversion_mapping() -> list[WeightTransform]:
    """transformers' native renames of the text model, with the per-expert weights kept per expert (upstream merges
    them into the fused tensors) and fused HF-layout tensors split per expert (`experts.unfuse_converters`)."""
    upstream = get_checkpoint_conversion_mapping(ARCHITECTURE.text_model_type) or []
    renames = []
    for transform in upstream:
        if isinstance(transform, WeightConverter):
            continue
        if transform.source_patterns == [r"\.experts\."]:
            # Native `layers.N.experts.E.*` -> `mlp.experts.E.*`, and HF-layout `mlp.experts.*` left as it is:
            # upstream's model has those fused names, which transformers keeps unrenamed; the per-expert one has not.
            transform = WeightRenaming(r"(?<!\.mlp)\.experts\.", transform.target_patterns[0])
        renames.append(transform)
    return [*renames, *unfuse_converters()]
