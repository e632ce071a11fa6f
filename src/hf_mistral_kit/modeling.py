"""Kit config and model classes for Mistral and Mixtral, registered under the kit's own model types.

The classes are thin subclasses of transformers' own; what they add:
- their own `model_type`s (`hf_mistral_kit_mistral`, `hf_mistral_kit_mixtral`), registered with the Auto classes by
  `register()`, while transformers' built-in `mistral`/`mixtral` mapping is left untouched;
- checkpoints they save carry the upstream `model_type` and architecture names, so plain transformers loads them;
- `from_pretrained` also accepts Mistral's native layout (`params.json` + `consolidated*.safetensors`);
- Mixtral: under a bitsandbytes config the experts are built as per-expert `nn.Linear`s that bitsandbytes quantizes
  (see `moe_quant`), from fused 5.x and per-expert 4.x/native checkpoints alike; otherwise the fused experts and
  transformers' `grouped_mm` kernel are kept.
"""

from __future__ import annotations

import copy
import os
from typing import Any, ClassVar

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    MistralConfig,
    MixtralConfig,
)
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.models.mistral.modeling_mistral import (
    MistralForCausalLM,
    MistralForSequenceClassification,
    MistralModel,
    MistralPreTrainedModel,
)
from transformers.models.mixtral.modeling_mixtral import (
    MixtralForCausalLM,
    MixtralForSequenceClassification,
    MixtralModel,
    MixtralPreTrainedModel,
)

from .moe_quant import MixtralExpertLinears, experts_need_linear_layers, per_expert_conversion_mapping
from .tokenizer import MistralSentencePieceTokenizer

KIT_MISTRAL_MODEL_TYPE = "hf_mistral_kit_mistral"
KIT_MIXTRAL_MODEL_TYPE = "hf_mistral_kit_mixtral"

# Hub arguments, consumed once a GGUF file has been resolved.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")
# What `PreTrainedConfig._get_config_dict` consumes besides the path (hub and bookkeeping arguments).
_CONFIG_LOADING_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "local_files_only",
    "revision",
    "trust_remote_code",
    "subfolder",
    "_from_pipeline",
    "_from_auto",
    "_commit_hash",
    "_configuration_file",
)


class _KitConfigMixin:
    """Own `model_type` in memory, upstream `model_type` on disk; reads native `params.json` directories too."""

    upstream_model_type: ClassVar[str]

    @classmethod
    def _get_config_dict(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        from .gguf import config_dict_from_gguf_file, gguf_checkpoint_file
        from .native import config_dict_from_params, native_checkpoint_dir

        gguf_path = gguf_checkpoint_file(pretrained_model_name_or_path, kwargs)
        directory = None
        if gguf_path is None:
            directory = native_checkpoint_dir(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        if gguf_path is None and directory is None:
            config_dict, kwargs = super()._get_config_dict(pretrained_model_name_or_path, **kwargs)
            if config_dict is None:
                return None, kwargs
        else:
            source = gguf_path or directory / "params.json"
            config_dict = config_dict_from_gguf_file(gguf_path) if gguf_path else config_dict_from_params(directory)
            if config_dict["model_type"] != cls.upstream_model_type:
                raise ValueError(
                    f"{source} describes a {config_dict['model_type']} checkpoint, not a "
                    f"{cls.upstream_model_type} one: load it with hf_mistral_kit.AutoConfig / AutoModelForCausalLM."
                )
            for name in (*_CONFIG_LOADING_KWARGS, "gguf_file"):
                kwargs.pop(name, None)
        return cls._with_kit_model_type(config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        return super().from_dict(cls._with_kit_model_type(config_dict), **kwargs)

    @classmethod
    def _with_kit_model_type(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        if config_dict.get("model_type") == cls.upstream_model_type:
            return {**config_dict, "model_type": cls.model_type}
        return config_dict

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["model_type"] = self.upstream_model_type
        if output.get("architectures"):
            output["architectures"] = [_upstream_architecture(name) for name in output["architectures"]]
        return output


class KitMistralConfig(_KitConfigMixin, MistralConfig):
    model_type = KIT_MISTRAL_MODEL_TYPE
    upstream_model_type = "mistral"


class KitMixtralConfig(_KitConfigMixin, MixtralConfig):
    model_type = KIT_MIXTRAL_MODEL_TYPE
    upstream_model_type = "mixtral"


def to_kit_config(config: Any) -> KitMistralConfig | KitMixtralConfig:
    """The kit config equivalent to a `MistralConfig`/`MixtralConfig` (kit configs are returned as they are)."""
    if isinstance(config, (KitMistralConfig, KitMixtralConfig)):
        return config
    for kit_class in (KitMistralConfig, KitMixtralConfig):
        if config.model_type == kit_class.upstream_model_type:
            # Same fields, other class: a re-typed copy keeps runtime state `to_dict` drops (attn implementation...).
            kit_config = copy.deepcopy(config)
            kit_config.__class__ = kit_class
            kit_config.__dict__.pop("model_type", None)  # set by `from_dict` on configs read from config.json
            return kit_config
    raise ValueError(f"Expected a Mistral or Mixtral config, got model_type {config.model_type!r}.")


class _NativeCheckpointMixin:
    """`from_pretrained` also accepts a Mistral native directory and (with `gguf_file=`, or a path to the file) a
    Mistral/Mixtral GGUF, loaded through the regular transformers path."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, *model_args, **kwargs):
        from .gguf import GGUFCheckpoint, gguf_checkpoint_file
        from .native import NativeCheckpoint, native_checkpoint_dir

        gguf_path = gguf_checkpoint_file(pretrained_model_name_or_path, kwargs)
        directory = None
        if gguf_path is None and pretrained_model_name_or_path is not None:
            directory = native_checkpoint_dir(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        if gguf_path is None and directory is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

        for name in ("subfolder", "gguf_file", *_HUB_KWARGS):
            kwargs.pop(name, None)
        output_loading_info = kwargs.pop("output_loading_info", False)
        source = gguf_path or directory
        # The kit config reads params.json or the GGUF metadata, applying config kwargs.
        kwargs.setdefault("config", str(source))
        with GGUFCheckpoint(gguf_path) if gguf_path else NativeCheckpoint(directory) as checkpoint:
            model, loading_info = super().from_pretrained(
                None, *model_args, state_dict=checkpoint.hf_state_dict(), output_loading_info=True, **kwargs
            )
        checkpoint.check_loading_info(loading_info, model)
        model.name_or_path = model.config.name_or_path = str(source)
        checkpoint.apply_generation_config(model)
        return (model, loading_info) if output_loading_info else model


# --- Mistral ---------------------------------------------------------------------------------------------------


class KitMistralPreTrainedModel(_NativeCheckpointMixin, MistralPreTrainedModel):
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


# --- Mixtral ---------------------------------------------------------------------------------------------------


class KitMixtralPreTrainedModel(_NativeCheckpointMixin, MixtralPreTrainedModel):
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
        for layer in self.layers:
            layer.mlp.experts = MixtralExpertLinears(self.config)
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


def _upstream_architecture(name: str) -> str:
    """`KitMixtralForCausalLM` -> `MixtralForCausalLM`: the transformers class a kit class stands for."""
    kit_class = _KIT_CLASSES.get(name)
    if kit_class is None:
        return name
    return next(base.__name__ for base in kit_class.__mro__ if base.__module__.startswith("transformers."))


_KIT_CLASSES = {
    cls.__name__: cls
    for cls in (
        KitMistralModel,
        KitMistralForCausalLM,
        KitMistralForSequenceClassification,
        KitMixtralModel,
        KitMixtralPerExpertModel,
        KitMixtralForCausalLM,
        KitMixtralForSequenceClassification,
    )
}

_registered = False


def register() -> None:
    """Register the kit model types with transformers' Auto classes and weight-conversion mappings.

    Idempotent, and run when this module is imported (by anything that uses the kit's model or Auto classes).
    Only the kit's own keys are registered: transformers' built-in `mistral`/`mixtral` entries keep pointing at
    transformers' classes.
    """
    global _registered
    if _registered:
        return
    for config_class, base, causal_lm, sequence_classification in (
        (KitMistralConfig, KitMistralModel, KitMistralForCausalLM, KitMistralForSequenceClassification),
        (KitMixtralConfig, KitMixtralModel, KitMixtralForCausalLM, KitMixtralForSequenceClassification),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base, exist_ok=True)
        AutoModelForCausalLM.register(config_class, causal_lm, exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, sequence_classification, exist_ok=True)
        # Makes `tokenizer_class: MistralSentencePieceTokenizer` in a saved tokenizer_config.json resolvable.
        AutoTokenizer.register(config_class, tokenizer_class=MistralSentencePieceTokenizer, exist_ok=True)
    # Looked up by the class name of the base model inside any kit Mixtral, so each experts layout gets its own:
    # upstream's (4.x per-expert checkpoints merged into fused experts) or the per-expert one (`moe_quant`).
    register_checkpoint_conversion_mapping(
        KitMixtralModel.__name__, get_checkpoint_conversion_mapping("mixtral"), overwrite=True
    )
    register_checkpoint_conversion_mapping(
        KitMixtralPerExpertModel.__name__, per_expert_conversion_mapping(), overwrite=True
    )
    _registered = True


register()  # the kit's classes never exist unregistered: a kit Auto class resolves only after this
