"""Drop-in `AutoConfig`, `AutoTokenizer`, `AutoModel*`: transformers' classes plus the Mistral family's needs.

They accept everything transformers' Auto classes accept and hand anything that is not a Mistral-family checkpoint
straight to them. On top of that:
- Mistral-family checkpoints (`architectures.ARCHITECTURES`: mistral, mixtral, ministral, ministral3, mistral4,
  mistral3, mistral_large4), Hugging Face, native (`params.json`) or GGUF (`gguf_file=`, as in transformers, or a path
  to the `.gguf` file), load into the kit classes: native directories and GGUF files load without a converted copy,
  a Mixtral GGUF with its experts (transformers' own GGUF reader makes it a dense Llama), and the routed experts of
  every mixture of experts get quantized under a bitsandbytes config (see `hf_mistral_kit.modeling`);
- `AutoModelForCausalLM` loads mistral4 (transformers' own has no entry for it); on a `mistral3` checkpoint (a vision
  wrapper) it loads the text model alone, the kit class of `text_config`'s type, from either save layout of the
  wrapper (the vision tower and projector are neither loaded nor kept); on `mistral_large4`, which has no text-only
  causal LM upstream, it loads the whole `MistralLarge4ForConditionalGeneration` (as transformers' own does for
  Gemma 3): its output head and logit soft-capping live there, and what it saves reloads in plain transformers.
  `AutoModelForImageTextToText` loads the whole vision-language model (and mistral4's causal LM, as transformers);
- `from_pretrained(..., preset="name", context_length=None)` fills loading arguments (`dtype`, `device_map`,
  `attn_implementation`, `quantization_config`) from `hf_mistral_kit.planning.presets`; arguments passed explicitly
  win;
- `AutoTokenizer` loads Mistral tokenizer files (`tokenizer.model.v1`/`v3`, ...), directories holding one and native
  directories with `hf_mistral_kit.tokenizers.loading.load_tokenizer`, which gives exact ids and the matching chat
  template. Importing this module also registers the kit's SentencePiece tokenizer class for the kit's model types
  with transformers' `AutoTokenizer` (folders older kits saved name it in `tokenizer_config.json`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import transformers
from transformers import PreTrainedConfig

from .architectures import MODEL_TYPES, find_architecture
from .formats.dispatch import find_checkpoint, local_checkpoint
from .formats.gguf import load_gguf_tokenizer
from .hub import TOKENIZER_AND_CONFIG_FILES, hub_kwargs
from .modeling.registration import FAMILY, family_row, kit_config_class, to_kit_config
from .tokenizers.loading import TOKENIZER_FILE_PATTERN, load_tokenizer
from .tokenizers.sentencepiece import VERSIONED_FILE, MistralSentencePieceTokenizer
from .versions import TEKKEN_FILE, VERSION_KEY

logger = logging.getLogger(__name__)


def _kit_config_class(path: str | os.PathLike, kwargs: dict[str, Any]) -> type[PreTrainedConfig] | None:
    """The kit config class for a Mistral-family checkpoint at `path`, or None for anything else."""
    config = kwargs.get("config")
    if isinstance(config, PreTrainedConfig):
        return kit_config_class(config.model_type)
    source = find_checkpoint(path, kwargs)
    if source is not None:
        return kit_config_class(source.config_dict()["model_type"])
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(path, **hub_kwargs(kwargs))
    except (OSError, ValueError):
        return None  # e.g. an adapter-only repository: transformers knows how to resolve it
    return kit_config_class(config_dict.get("model_type"))


def _with_preset(
    preset: str | None, context_length: int | None, model: Any, kwargs: dict[str, Any], vision: bool | None = None
) -> dict[str, Any]:
    if preset is None:
        if context_length is not None:
            raise TypeError("context_length only sizes a preset's memory plan: pass it together with preset=.")
        return kwargs
    from .planning.presets import resolve_preset

    resolved = resolve_preset(preset, model=model, context_length=context_length, vision=vision)
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
        config_class = _kit_config_class(pretrained_model_name_or_path, kwargs)
        if config_class is not None:
            if isinstance(kwargs.get("config"), PreTrainedConfig):
                kwargs["config"] = to_kit_config(kwargs["config"])
            if cls._loads_text_model(config_class):  # the text model alone: loaded, and planned by the preset
                wrapper = kwargs.pop("config", None)
                if not isinstance(wrapper, PreTrainedConfig):
                    wrapper = config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs(kwargs))
                kwargs["config"] = _with_config_kwargs(wrapper.text_model_config(), kwargs)
                kwargs["key_mapping"] = {**wrapper.text_key_mapping, **(kwargs.get("key_mapping") or {})}
                config_class = type(kwargs["config"])
        model = kwargs.get("config") or pretrained_model_name_or_path
        if preset is not None and not isinstance(model, PreTrainedConfig):
            source = find_checkpoint(pretrained_model_name_or_path, kwargs)
            if source is not None and source.layout == "gguf":
                model = source.config_dict()  # the preset plans from it
        # The whole vision-language model is planned where it is loaded whole (a text route changed config_class).
        row = None if config_class is None else find_architecture(config_class.model_type)
        vision = True if row is not None and row.vision else None
        kwargs = _with_preset(preset, context_length, model, kwargs, vision)
        if config_class is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        try:
            model_class = cls._kit_model_class(config_class)
        except ValueError:
            source = find_checkpoint(pretrained_model_name_or_path, kwargs)
            if source is not None and source.layout == "native" and cls._model_mapping is _IMAGE_TEXT_MAPPING:
                raise ValueError(
                    f"{pretrained_model_name_or_path} is in Mistral's native layout (params.json), which the kit "
                    "loads as its text model only (hf_mistral_kit.AutoModelForCausalLM): load the Hugging Face "
                    "release (config.json) for the vision-language model."
                ) from None
            raise
        loaded = model_class.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        _untie_a_separate_head(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    @classmethod
    def from_config(cls, config: PreTrainedConfig, **kwargs: Any):
        if kit_config_class(config.model_type) is not None:
            config = to_kit_config(config)
            if cls._loads_text_model(type(config)):
                config = config.text_model_config()
            cls._kit_model_class(type(config))  # a clear error where this Auto class has none
        return super().from_config(config, **kwargs)

    @classmethod
    def _loads_text_model(cls, config_class: type) -> bool:
        """A vision wrapper without a causal LM of its own, asked for a causal LM: its text model is loaded."""
        row = family_row(config_class.model_type)
        return (
            issubclass(cls, transformers.AutoModelForCausalLM)
            and row is not None
            and row.causal_lm is None
            and hasattr(config_class, "text_model_config")
        )

    @classmethod
    def _kit_model_class(cls, config_class: type) -> type:
        try:
            return cls._model_mapping[config_class]
        except KeyError:
            model_type = getattr(config_class, "upstream_model_type", config_class.model_type)
            raise ValueError(
                f"hf_mistral_kit.{cls.__name__} has no class for {model_type} checkpoints: load them with "
                f"{_auto_classes_for(family_row(model_type))}."
            ) from None


def _untie_a_separate_head(model: Any) -> None:
    """A checkpoint's own output head, loaded apart from the embeddings, stays apart: its config says untied.

    mistral3's wrapper config says `tie_word_embeddings: true` unless config.json says otherwise (transformers'
    default since Ministral-3-3B), while the releases with their own `lm_head` (Mistral Small 3.x) leave it out;
    transformers then loads the head untied but keeps the flag, so the next `resize_token_embeddings` or `tie_weights`
    would replace the trained head with the embeddings, and a save would say tied.
    """
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embeddings is None or head.weight is embeddings.weight:
        return
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False


# `from_pretrained` arguments that configs also hold as attributes but that are loading arguments, not config values.
_LOADING_ARGUMENTS = ("dtype", "torch_dtype", "quantization_config", "attn_implementation", "device_map")


def _with_config_kwargs(config: PreTrainedConfig, kwargs: dict[str, Any]) -> PreTrainedConfig:
    """`config` with the keyword arguments that name its fields applied (and taken out of `kwargs`), as transformers'
    `from_pretrained` applies them when it reads the config itself (`sliding_window=8`, `use_cache=False`)."""
    fields = config.to_dict()
    for key in [key for key in kwargs if key in fields and key not in _LOADING_ARGUMENTS]:
        setattr(config, key, kwargs.pop(key))
    return config


def _auto_classes_for(row: Any) -> str:
    """The kit's Auto classes that load a family row's checkpoints."""
    offers = [
        name
        for name, model_class in (
            ("AutoModelForCausalLM", row.causal_lm or getattr(row.config, "text_model_config", None)),
            ("AutoModelForImageTextToText", row.image_text_to_text),
            ("AutoModelForSequenceClassification", row.sequence_classification),
        )
        if model_class is not None
    ]
    return " or ".join(f"hf_mistral_kit.{name}" for name in offers)


class AutoModel(_KitAutoModel, transformers.AutoModel):
    pass


class AutoModelForCausalLM(_KitAutoModel, transformers.AutoModelForCausalLM):
    pass


class AutoModelForSequenceClassification(_KitAutoModel, transformers.AutoModelForSequenceClassification):
    pass


class AutoModelForImageTextToText(_KitAutoModel, transformers.AutoModelForImageTextToText):
    """The whole vision-language model (mistral3, mistral_large4; and mistral4's causal LM, as in transformers)."""


_IMAGE_TEXT_MAPPING = AutoModelForImageTextToText._model_mapping


class AutoConfig(transformers.AutoConfig):
    """`transformers.AutoConfig`, returning kit configs for Mistral-family checkpoints, native ones included."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        config_class = _kit_config_class(pretrained_model_name_or_path, kwargs)
        if config_class is None:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return config_class.from_pretrained(pretrained_model_name_or_path, **kwargs)


def _is_mistral_tokenizer(path: str | os.PathLike, subfolder: str = "") -> bool:
    """A Mistral tokenizer file, or a directory whose tokenizer is one (native checkpoints included).

    Directories holding only Hugging Face tokenizer files go to transformers unless the kit saved them or they belong
    to a Mistral/Mixtral checkpoint: the kit then provides the exact tokenization and chat template.
    """
    path = Path(path) / subfolder if subfolder else Path(path)
    if path.is_file():
        return bool(TOKENIZER_FILE_PATTERN.match(path.name))
    if not path.is_dir():
        return False
    names = [file.name for file in path.iterdir() if TOKENIZER_FILE_PATTERN.match(file.name)]
    if any(VERSIONED_FILE.match(name) for name in names) or TEKKEN_FILE in names:
        return True
    if ((path / "tokenizer.model").is_file() or (path / "tokenizer.json").is_file()) and _is_mistral_family(path):
        return True
    has_hf_files = (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
    source = local_checkpoint(path)
    return ("tokenizer.model" in names and not has_hf_files) or (source is not None and source.layout == "native")


def _is_mistral_family(directory: Path) -> bool:
    """A Mistral/Mixtral checkpoint (by its config), or a tokenizer the kit saved: its exact tokenizer applies."""
    for filename, accepts in (
        ("config.json", lambda config: config.get("model_type") in MODEL_TYPES),
        (
            "tokenizer_config.json",
            lambda config: VERSION_KEY in config or config.get("tokenizer_class") == "MistralSentencePieceTokenizer",
        ),
    ):
        try:
            if accepts(json.loads((directory / filename).read_text())):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _hub_tokenizer_dir(repo_id: str, kwargs: dict[str, Any]) -> Path | None:
    """The tokenizer files of a hub repository, downloaded (or found in the cache); None when that fails."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=list(TOKENIZER_AND_CONFIG_FILES), **hub_kwargs(kwargs, subfolder=False)
            )
        )
    except (OSError, ValueError, HFValidationError):  # offline, unknown or gated repository: transformers says why
        return None


class AutoTokenizer(transformers.AutoTokenizer):
    """`transformers.AutoTokenizer`; Mistral tokenizers load with `hf_mistral_kit.tokenizers.loading.load_tokenizer`.

    Mistral tokenizer files, directories holding one, folders the kit saved, Mistral/Mixtral checkpoints (local or
    on the hub) and GGUF files (`gguf_file=`, or the file's path) get the kit's exact fast tokenizer and chat
    template; tokenizer keyword arguments (`padding_side`,
    `pad_token`, `add_bos_token`, `model_max_length`, ...) apply as with transformers. Anything else goes to
    `transformers.AutoTokenizer`.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any, **kwargs: Any):
        source = find_checkpoint(pretrained_model_name_or_path, kwargs)
        if source is not None and source.layout == "gguf":  # the exact tokenizer, rebuilt from the file's vocabulary
            tokenizer_kwargs = {key: value for key, value in kwargs.items() if key != "gguf_file"}
            return load_gguf_tokenizer(source.path, **tokenizer_kwargs)
        subfolder = kwargs.get("subfolder", "")
        path = Path(pretrained_model_name_or_path)
        if not path.exists() and not kwargs.get("gguf_file") and str(pretrained_model_name_or_path).count("/") == 1:
            downloaded = _hub_tokenizer_dir(str(pretrained_model_name_or_path), kwargs)
            path = downloaded if downloaded is not None else path
        if not _is_mistral_tokenizer(path, subfolder):
            return super().from_pretrained(pretrained_model_name_or_path, *inputs, **kwargs)
        if inputs:
            raise TypeError(
                "Mistral tokenizers take keyword arguments only (e.g. padding_side='left'); got positional ones."
            )
        return load_tokenizer(path / subfolder if subfolder else path, **kwargs)


def _register_tokenizer() -> None:
    """`tokenizer_class: MistralSentencePieceTokenizer` (what folders older kits saved name) resolvable by transformers'
    own AutoTokenizer, for the kit's model types only."""
    for row in FAMILY:
        transformers.AutoTokenizer.register(row.config, tokenizer_class=MistralSentencePieceTokenizer, exist_ok=True)


_register_tokenizer()
