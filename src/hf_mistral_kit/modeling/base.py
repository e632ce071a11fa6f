"""What every kit config and model class adds to transformers' own: the kit's model type in memory, upstream names on
disk, and `from_pretrained` on native directories and GGUF files.

- Configs have their own `model_type` (`hf_mistral_kit_mistral`, ...: `architectures.ARCHITECTURES`), registered with
  the Auto classes beside transformers' built-in `mistral`/`mixtral` mapping, which is left untouched; what they save
  carries the upstream `model_type` and architecture names, so plain transformers loads it.
- Configs and models also read Mistral's native layout (`params.json` + `consolidated*.safetensors`) and GGUF files
  (`gguf_file=`, or a path to the file), opened by `formats.dispatch` and loaded through transformers' regular path.
"""

from __future__ import annotations

import copy
import os
from typing import Any, ClassVar

from transformers.core_model_loading import WeightRenaming

from ..formats.dispatch import find_checkpoint
from ..hub import HUB_KWARGS, LOADING_KWARGS
from .experts import LoadOnlyConverter
from .quantization import EXPERTS_AS_LINEARS, experts_need_linear_layers, flatten_8bit_inputs, with_unquantized_modules

# Every kit model class by name (filled as they are defined): what `config.json`'s `architectures` names.
_KIT_CLASSES: dict[str, type] = {}
# A (not serialized) config attribute: checkpoint keys (regular expressions) the model leaves out without a word, e.g.
# the vision tower's when a text model is loaded from a vision-language wrapper's checkpoint.
IGNORED_CHECKPOINT_KEYS = "_kit_ignored_checkpoint_keys"
# Every kit config class by its upstream model type (filled as they are defined), sub-configs' (a wrapper's text
# model) included.
_KIT_CONFIGS: dict[str, type] = {}


class KitConfigMixin:
    """Own `model_type` in memory, upstream `model_type` on disk; reads native `params.json` directories and GGUF
    files too."""

    upstream_model_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("hf_mistral_kit.") and "upstream_model_type" in vars(cls):
            _KIT_CONFIGS[cls.upstream_model_type] = cls

    @classmethod
    def _get_config_dict(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        source = find_checkpoint(pretrained_model_name_or_path, kwargs)
        if source is None:
            config_dict, kwargs = super()._get_config_dict(pretrained_model_name_or_path, **kwargs)
            if config_dict is None:
                return None, kwargs
        else:
            config_dict = source.config_dict()
            if config_dict["model_type"] != cls.upstream_model_type:
                raise ValueError(
                    f"{source.description} describes a {config_dict['model_type']} checkpoint, not a "
                    f"{cls.upstream_model_type} one: load it with hf_mistral_kit.AutoConfig / AutoModelForCausalLM."
                )
            for name in (*HUB_KWARGS, *LOADING_KWARGS, "gguf_file"):
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

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        self._kit_retyped()

    def _kit_retyped(self) -> None:
        """Called on every kit config once built, and on an upstream config re-typed as this kit class
        (`to_kit_config`): fix what the kit fixes."""

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for runtime_state in (EXPERTS_AS_LINEARS, IGNORED_CHECKPOINT_KEYS):
            output.pop(runtime_state, None)
        output["model_type"] = self.upstream_model_type
        if output.get("architectures"):
            output["architectures"] = [upstream_architecture(name) for name in output["architectures"]]
        return output


class KitModelMixin:
    """`from_pretrained` also accepts a Mistral native directory and (with `gguf_file=`, or a path to the file) a
    Mistral/Mixtral GGUF, loaded through the regular transformers path."""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("hf_mistral_kit."):  # a user's own subclass keeps its name in config.json
            _KIT_CLASSES[cls.__name__] = cls

    def post_init(self):
        super().post_init()
        ignored = getattr(self.config, IGNORED_CHECKPOINT_KEYS, None)
        if ignored:
            self._keys_to_ignore_on_load_unexpected = {*(self._keys_to_ignore_on_load_unexpected or ()), *ignored}

    def save_pretrained(self, *args: Any, **kwargs: Any):
        _without_load_only_conversions(self)
        return super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, *model_args, **kwargs):
        kwargs = with_unquantized_modules(kwargs)
        source = find_checkpoint(pretrained_model_name_or_path, kwargs)
        if source is None:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded
            flatten_8bit_inputs(model)
            if getattr(model.config, IGNORED_CHECKPOINT_KEYS, None):
                _save_in_own_layout(model, kwargs.get("key_mapping"))
            return loaded

        for name in ("gguf_file", *HUB_KWARGS):
            kwargs.pop(name, None)
        output_loading_info = kwargs.pop("output_loading_info", False)
        # The kit config reads params.json or the GGUF metadata, applying config kwargs.
        kwargs.setdefault("config", str(source.path))
        with source.open() as checkpoint:
            model, loading_info = super().from_pretrained(
                None, *model_args, state_dict=checkpoint.hf_state_dict(), output_loading_info=True, **kwargs
            )
        checkpoint.check_loading_info(loading_info, model)
        flatten_8bit_inputs(model)
        model.name_or_path = model.config.name_or_path = str(source.path)
        checkpoint.apply_generation_config(model)
        return (model, loading_info) if output_loading_info else model


def _without_load_only_conversions(model: Any) -> None:
    conversions = getattr(model, "_weight_conversions", None)
    if conversions is None:  # not loaded with from_pretrained: transformers would look the mapping up (as here)
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange

        conversions = get_model_conversion_mapping(model, add_legacy=False)
        if not any(isinstance(transform, LoadOnlyConverter) for transform in conversions):
            return
        conversions = [transform for transform in conversions if not isinstance(transform, PrefixChange)]
    model._weight_conversions = [transform for transform in conversions if not isinstance(transform, LoadOnlyConverter)]


def _save_in_own_layout(model: Any, key_mapping: dict[str, str] | None) -> None:
    """A text model loaded from a wrapper's checkpoint (`key_mapping` renaming the wrapper's names) saves under its own
    names: transformers would otherwise undo the renames on `save_pretrained`, writing the wrapper's layout."""
    conversions = getattr(model, "_weight_conversions", None)
    if not conversions or not key_mapping:
        return
    model._weight_conversions = [
        transform
        for transform in conversions
        if not (isinstance(transform, WeightRenaming) and set(transform.source_patterns) <= set(key_mapping))
    ]


def kit_config_for(model_type: str | None) -> type | None:
    """The kit config class standing for an upstream (or kit) `model_type`, None for any other."""
    found = _KIT_CONFIGS.get(model_type)
    if found is None:
        found = next((kit for kit in _KIT_CONFIGS.values() if kit.model_type == model_type), None)
    return found


def to_kit_config(config: Any) -> Any:
    """The kit config equivalent to an upstream config of the family (kit configs are returned as they are)."""
    kit_class = kit_config_for(config.model_type)
    if kit_class is None:
        raise ValueError(f"Expected a Mistral-family config, got model_type {config.model_type!r}.")
    if isinstance(config, kit_class):
        return config
    # Same fields, other class: a re-typed copy keeps runtime state `to_dict` drops (attn implementation...).
    kit_config = copy.deepcopy(config)
    kit_config.__class__ = kit_class
    kit_config.__dict__.pop("model_type", None)  # set by `from_dict` on configs read from config.json
    kit_config._kit_retyped()
    return kit_config


def ready_language_model_config(config: Any) -> None:
    """A vision-language wrapper's `text_config` readied for its language model (`AutoModel.from_config`): the kit's
    config of its type, so the kit's class is built, told to build its experts as linear layers when the wrapper is
    quantized (the quantization config lives on the wrapper's config only)."""
    config.text_config = kit_text_config(config.text_config)
    if experts_need_linear_layers(config):
        setattr(config.text_config, EXPERTS_AS_LINEARS, True)


def kit_text_config(config: Any) -> Any:
    """A vision-language wrapper's text config as the kit's config of its type, when the kit has one (else as it
    is): the language model inside the wrapper is then the kit's class (`AutoModel.from_config`)."""
    if config is not None and kit_config_for(getattr(config, "model_type", None)) is not None:
        return to_kit_config(config)
    return config


def upstream_architecture(name: str) -> str:
    """`KitMixtralForCausalLM` -> `MixtralForCausalLM`: the transformers class a kit class stands for."""
    kit_class = _KIT_CLASSES.get(name)
    if kit_class is None:
        return name
    return next(base.__name__ for base in kit_class.__mro__ if base.__module__.startswith("transformers."))
