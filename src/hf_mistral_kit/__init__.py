"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast.

`import hf_mistral_kit` is light: it imports neither torch nor transformers' modeling code. Each public name is
imported from its module on first use (PEP 562 `__getattr__`), so `kit.render(...)` costs the templates only and
`kit.AutoModelForCausalLM` loads the model classes. Whatever brings in the kit's model classes also registers them
with transformers' Auto classes under the kit's own model types (`register()`, run when `hf_mistral_kit.modeling` is
imported), so registration has always happened before a kit Auto class resolves anything; transformers' built-in
`mistral`/`mixtral` mappings are left alone.

The layers, bottom to top (each imports only those below it; `pyproject.toml`'s import-linter contract checks it):
`versions`, `architectures`, `hub`, `quiet` (facts, and library warnings as notes) -> `chat` -> `tokenizers` ->
`formats` -> `modeling`, `planning` -> `auto`, `convert` -> `loading`, `tiny` -> `cli`. Importing the package puts
`quiet`'s notes in place (standard library only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .quiet import install as _install_notes

# Public name -> the module that defines it.
_EXPORTS = {
    "AutoConfig": "auto",
    "AutoModel": "auto",
    "AutoModelForCausalLM": "auto",
    "AutoModelForImageTextToText": "auto",
    "AutoModelForSequenceClassification": "auto",
    "AutoTokenizer": "auto",
    "KitMistralConfig": "modeling",
    "KitMistralForCausalLM": "modeling",
    "KitMistralForSequenceClassification": "modeling",
    "KitMistralModel": "modeling",
    "KitMixtralConfig": "modeling",
    "KitMixtralForCausalLM": "modeling",
    "KitMixtralForSequenceClassification": "modeling",
    "KitMixtralModel": "modeling",
    "register": "modeling",
    "NativeCheckpointError": "formats.errors",
    "convert_checkpoint": "convert",
    "GGUFError": "formats.errors",
    "load_gguf_tokenizer": "formats.gguf",
    "tiny_model": "tiny",
    "MistralSentencePieceTokenizer": "tokenizers.sentencepiece",
    "MistralTekkenTokenizer": "tokenizers.tekken",
    "MistralTokenizerBase": "tokenizers.base",
    "TokenizerFileError": "tokenizers.errors",
    "ConversationError": "chat.errors",
    "ValidationMode": "chat.errors",
    "prepare_chat": "chat.prepare",
    "apply_chat_template": "chat.templates",
    "get_chat_template": "chat.templates",
    "list_templates": "chat.templates",
    "load_tokenizer": "tokenizers.loading",
    "reference_tokenizer_file": "tokenizers.loading",
    "render": "chat.templates",
    "parse_response": "tokenizers.replies",
    "Hardware": "planning.hardware",
    "MemoryPlan": "planning.memory",
    "PRESETS": "planning.presets",
    "Preset": "planning.presets",
    "PresetError": "planning.presets",
    "ResolvedPreset": "planning.presets",
    "load_model": "loading",
    "lora_config": "loading",
    "plan_memory": "planning.plan",
    "resolve_preset": "planning.presets",
}

__all__ = [
    # drop-in Auto classes and the model classes behind them
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForImageTextToText",
    "AutoModelForSequenceClassification",
    "AutoTokenizer",
    "KitMistralConfig",
    "KitMistralForCausalLM",
    "KitMistralForSequenceClassification",
    "KitMistralModel",
    "KitMixtralConfig",
    "KitMixtralForCausalLM",
    "KitMixtralForSequenceClassification",
    "KitMixtralModel",
    "register",
    # native and GGUF checkpoints, tiny offline models
    "GGUFError",
    "NativeCheckpointError",
    "convert_checkpoint",
    "load_gguf_tokenizer",
    "tiny_model",
    # chat templates, the conversation contract and exact tokenizers
    "ConversationError",
    "MistralSentencePieceTokenizer",
    "MistralTekkenTokenizer",
    "MistralTokenizerBase",
    "TokenizerFileError",
    "ValidationMode",
    "apply_chat_template",
    "get_chat_template",
    "list_templates",
    "load_tokenizer",
    "parse_response",
    "prepare_chat",
    "reference_tokenizer_file",
    "render",
    # presets, hardware, memory planning, loading
    "Hardware",
    "MemoryPlan",
    "PRESETS",
    "Preset",
    "PresetError",
    "ResolvedPreset",
    "load_model",
    "lora_config",
    "plan_memory",
    "resolve_preset",
]


# Modules and packages reachable as attributes (`hf_mistral_kit.formats`), as when the package imported them all.
_SUBMODULES = (
    "architectures",
    "auto",
    "chat",
    "cli",
    "convert",
    "formats",
    "hub",
    "loading",
    "modeling",
    "planning",
    "tiny",
    "tokenizers",
    "versions",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_install_notes()  # library warnings the user did not cause, as notes (see `quiet`)


if TYPE_CHECKING:  # what static tools and IDEs see: the same names, imported eagerly
    from .auto import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from .chat.errors import ConversationError, ValidationMode
    from .chat.prepare import prepare_chat
    from .chat.templates import apply_chat_template, get_chat_template, list_templates, render
    from .convert import convert_checkpoint
    from .formats.errors import GGUFError, NativeCheckpointError
    from .formats.gguf import load_gguf_tokenizer
    from .loading import load_model, lora_config
    from .modeling import (
        KitMistralConfig,
        KitMistralForCausalLM,
        KitMistralForSequenceClassification,
        KitMistralModel,
        KitMixtralConfig,
        KitMixtralForCausalLM,
        KitMixtralForSequenceClassification,
        KitMixtralModel,
        register,
    )
    from .planning.hardware import Hardware
    from .planning.memory import MemoryPlan
    from .planning.plan import plan_memory
    from .planning.presets import PRESETS, Preset, PresetError, ResolvedPreset, resolve_preset
    from .tiny import tiny_model
    from .tokenizers.base import MistralTokenizerBase
    from .tokenizers.errors import TokenizerFileError
    from .tokenizers.loading import load_tokenizer, reference_tokenizer_file
    from .tokenizers.replies import parse_response
    from .tokenizers.sentencepiece import MistralSentencePieceTokenizer
    from .tokenizers.tekken import MistralTekkenTokenizer
