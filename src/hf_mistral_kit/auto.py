"""Drop-in `AutoConfig`, `AutoTokenizer`, `AutoModel*`: transformers' classes plus the Mistral family's needs.

They accept everything transformers' Auto classes accept and hand anything that is not a Mistral/Mixtral checkpoint
straight to them. On top of that:
- Mistral/Mixtral checkpoints, Hugging Face (`model_type` `mistral`/`mixtral`), native (`params.json`) or GGUF
  (`gguf_file=`, as in transformers, or a path to the `.gguf` file), load into the kit classes: native directories
  and GGUF files load without a converted copy, a Mixtral GGUF with its experts (transformers' own GGUF reader makes
  it a dense Llama), and Mixtral's experts get quantized under a bitsandbytes config (see `hf_mistral_kit.modeling`);
- `from_pretrained(..., preset="name", context_length=None)` fills loading arguments (`dtype`, `device_map`,
  `attn_implementation`, `quantization_config`) from `hf_mistral_kit.presets`; arguments passed explicitly win;
- `AutoTokenizer` loads Mistral tokenizer files (`tokenizer.model.v1`/`v3`, ...), directories holding one and native
  directories with `hf_mistral_kit.tokenizer.load_tokenizer`, which gives exact ids and the matching chat template.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import transformers
from transformers import PreTrainedConfig

from .gguf import config_dict_from_gguf_file, gguf_checkpoint_file
from .modeling import KitMistralConfig, KitMixtralConfig, to_kit_config
from .native import TOKENIZER_FILE_PATTERN, config_dict_from_params, native_checkpoint_dir

logger = logging.getLogger(__name__)

_KIT_CONFIGS = {
    "mistral": KitMistralConfig,
    "mixtral": KitMixtralConfig,
    KitMistralConfig.model_type: KitMistralConfig,
    KitMixtralConfig.model_type: KitMixtralConfig,
}
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def _kit_config_class(path: str | os.PathLike, kwargs: dict[str, Any]) -> type[PreTrainedConfig] | None:
    """The kit config class for a Mistral-family checkpoint at `path`, or None for anything else."""
    config = kwargs.get("config")
    if isinstance(config, PreTrainedConfig):
        return _KIT_CONFIGS.get(config.model_type)
    gguf_path = gguf_checkpoint_file(path, kwargs)
    if gguf_path is not None:
        return _KIT_CONFIGS[config_dict_from_gguf_file(gguf_path)["model_type"]]
    native = native_checkpoint_dir(path, kwargs.get("subfolder", ""))
    if native is not None:
        return _KIT_CONFIGS[config_dict_from_params(native)["model_type"]]
    hub_kwargs = {name: kwargs[name] for name in _HUB_KWARGS if name in kwargs}
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(path, **hub_kwargs)
    except (OSError, ValueError):
        return None  # e.g. an adapter-only repository: transformers knows how to resolve it
    return _KIT_CONFIGS.get(config_dict.get("model_type"))


def _with_preset(preset: str | None, context_length: int | None, model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    if preset is None:
        if context_length is not None:
            raise TypeError("context_length only sizes a preset's memory plan: pass it together with preset=.")
        return kwargs
    from .presets import resolve_preset

    resolved = resolve_preset(preset, model=model, context_length=context_length)
    for note in resolved.notes:
        logger.info("preset %s: %s", preset, note)
    return {**resolved.kwargs, **kwargs}


class _KitAutoModel:
    """`from_pretrained`/`from_config` of the drop-in model classes (mixed into transformers' Auto classes)."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        preset: str | None = None,
        context_length: int | None = None,
        **kwargs: Any,
    ):
        model = kwargs.get("config") or pretrained_model_name_or_path
        if preset is not None and not isinstance(model, PreTrainedConfig):
            gguf_path = gguf_checkpoint_file(pretrained_model_name_or_path, kwargs)
            model = config_dict_from_gguf_file(gguf_path) if gguf_path else model  # the preset plans from it
        kwargs = _with_preset(preset, context_length, model, kwargs)
        config_class = _kit_config_class(pretrained_model_name_or_path, kwargs)
        if config_class is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if isinstance(kwargs.get("config"), PreTrainedConfig):
            kwargs["config"] = to_kit_config(kwargs["config"])
        model_class = cls._model_mapping[config_class]
        return model_class.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, **kwargs: Any):
        if config.model_type in _KIT_CONFIGS:
            config = to_kit_config(config)
        return super().from_config(config, **kwargs)


class AutoModel(_KitAutoModel, transformers.AutoModel):
    pass


class AutoModelForCausalLM(_KitAutoModel, transformers.AutoModelForCausalLM):
    pass


class AutoModelForSequenceClassification(_KitAutoModel, transformers.AutoModelForSequenceClassification):
    pass


class AutoConfig(transformers.AutoConfig):
    """`transformers.AutoConfig`, returning kit configs for Mistral/Mixtral checkpoints, native ones included."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        config_class = _kit_config_class(pretrained_model_name_or_path, kwargs)
        if config_class is None:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return config_class.from_pretrained(pretrained_model_name_or_path, **kwargs)


# Tokenizer arguments that only matter when downloading or picking a transformers class.
_IGNORED_TOKENIZER_KWARGS = {*_HUB_KWARGS, "use_fast", "trust_remote_code", "_from_auto"}
_TOKENIZER_ATTRIBUTES = ("padding_side", "truncation_side", "model_max_length")
_VERSIONED_SENTENCEPIECE = re.compile(r"^(tokenizer|.*)\.model\.v\d+\w*$")


def _is_mistral_tokenizer(path: str | os.PathLike, subfolder: str = "") -> bool:
    """A Mistral tokenizer file, or a directory whose tokenizer is one (native checkpoints included).

    Directories holding Hugging Face tokenizer files go to transformers unless they also hold a versioned Mistral
    SentencePiece file (`tokenizer.model.v3`, ...) or belong to a Mistral/Mixtral checkpoint with a `tokenizer.model`:
    the kit then provides the exact tokenization and chat template.
    """
    path = Path(path) / subfolder if subfolder else Path(path)
    if path.is_file():
        return bool(TOKENIZER_FILE_PATTERN.match(path.name))
    if not path.is_dir():
        return False
    names = [file.name for file in path.iterdir() if TOKENIZER_FILE_PATTERN.match(file.name)]
    if any(_VERSIONED_SENTENCEPIECE.match(name) for name in names):
        return True
    if (path / "tokenizer.model").is_file() and _is_mistral_family(path):
        return True
    has_hf_files = (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
    return (bool(names) and not has_hf_files) or native_checkpoint_dir(path) is not None


def _is_mistral_family(directory: Path) -> bool:
    """A Mistral/Mixtral checkpoint (by its config), or a tokenizer the kit saved: its exact tokenizer applies."""
    for filename, key, values in (
        ("config.json", "model_type", {"mistral", "mixtral", KitMistralConfig.model_type, KitMixtralConfig.model_type}),
        ("tokenizer_config.json", "tokenizer_class", {"MistralSentencePieceTokenizer"}),
    ):
        try:
            if json.loads((directory / filename).read_text()).get(key) in values:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


class AutoTokenizer(transformers.AutoTokenizer):
    """`transformers.AutoTokenizer`; Mistral tokenizer files load with `hf_mistral_kit.tokenizer.load_tokenizer`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any, **kwargs: Any):
        if not _is_mistral_tokenizer(pretrained_model_name_or_path, kwargs.get("subfolder", "")):
            return super().from_pretrained(pretrained_model_name_or_path, *inputs, **kwargs)
        from .tokenizer import load_tokenizer

        unsupported = sorted(set(kwargs) - _IGNORED_TOKENIZER_KWARGS - set(_TOKENIZER_ATTRIBUTES))
        if inputs or unsupported:
            raise TypeError(
                f"Mistral tokenizer files load with hf_mistral_kit.tokenizer.load_tokenizer, which only takes "
                f"{', '.join(_TOKENIZER_ATTRIBUTES)}; got {', '.join(unsupported) or 'positional arguments'}."
            )
        path = Path(pretrained_model_name_or_path) / kwargs.get("subfolder", "")
        tokenizer = load_tokenizer(path)
        for name in _TOKENIZER_ATTRIBUTES:
            if name in kwargs:
                setattr(tokenizer, name, kwargs[name])
        return tokenizer
