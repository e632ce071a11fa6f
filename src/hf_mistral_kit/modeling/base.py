"""What every kit config and model class adds to transformers' own: the kit's model type in memory, upstream names on
disk, and `from_pretrained` on native directories and GGUF files.

- Configs have their own `model_type` (`hf_mistral_kit_mistral`, ...: `architectures.ARCHITECTURES`), registered with
  the Auto classes beside transformers' built-in `mistral`/`mixtral` mapping, which is left untouched; what they save
  carries the upstream `model_type` and architecture names, so plain transformers loads it.
- Configs and models also read Mistral's native layout (`params.json` + `consolidated*.safetensors`) and GGUF files
  (`gguf_file=`, or a path to the file), opened by `formats.dispatch` and loaded through transformers' regular path.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ..formats.dispatch import find_checkpoint
from ..hub import HUB_KWARGS, LOADING_KWARGS

# Every kit model class by name (filled as they are defined): what `config.json`'s `architectures` names.
_KIT_CLASSES: dict[str, type] = {}


class KitConfigMixin:
    """Own `model_type` in memory, upstream `model_type` on disk; reads native `params.json` directories and GGUF
    files too."""

    upstream_model_type: ClassVar[str]

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

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, *model_args, **kwargs):
        source = find_checkpoint(pretrained_model_name_or_path, kwargs)
        if source is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

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
        model.name_or_path = model.config.name_or_path = str(source.path)
        checkpoint.apply_generation_config(model)
        return (model, loading_info) if output_loading_info else model


def upstream_architecture(name: str) -> str:
    """`KitMixtralForCausalLM` -> `MixtralForCausalLM`: the transformers class a kit class stands for."""
    kit_class = _KIT_CLASSES.get(name)
    if kit_class is None:
        return name
    return next(base.__name__ for base in kit_class.__mro__ if base.__module__.startswith("transformers."))
