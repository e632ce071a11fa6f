"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast.

`import hf_mistral_kit` is light: it imports neither torch nor transformers' modeling code. Each public name is
imported from its module on first use (PEP 562 `__getattr__`), so `kit.render(...)` costs the templates only and
`kit.AutoModelForCausalLM` loads the model classes. Whatever brings in the kit's model classes also registers them
with transformers' Auto classes under the kit's own model types (`register()`, run by `hf_mistral_kit.modeling` on
import), so registration has always happened before a kit Auto class resolves anything; transformers' built-in
`mistral`/`mixtral` mappings are left alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the submodule that defines it. The layers: conversation -> templates -> tokenizer -> native/gguf ->
# modeling -> hardware/memory/presets -> loading/auto.
_EXPORTS = {
    "AutoConfig": "auto",
    "AutoModel": "auto",
    "AutoModelForCausalLM": "auto",
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
    "NativeCheckpointError": "native",
    "convert_checkpoint": "native",
    "GGUFError": "gguf",
    "load_gguf_tokenizer": "gguf",
    "tiny_model": "tiny",
    "MistralSentencePieceTokenizer": "tokenizer",
    "MistralTekkenTokenizer": "tokenizer",
    "MistralTokenizerBase": "tokenizer",
    "ConversationError": "conversation",
    "ValidationMode": "conversation",
    "prepare_chat": "conversation",
    "apply_chat_template": "templates",
    "get_chat_template": "templates",
    "list_templates": "templates",
    "load_tokenizer": "tokenizer",
    "reference_tokenizer_file": "tokenizer",
    "render": "templates",
    "Hardware": "hardware",
    "MemoryPlan": "memory",
    "PRESETS": "presets",
    "Preset": "presets",
    "PresetError": "presets",
    "ResolvedPreset": "presets",
    "load_model": "loading",
    "plan_memory": "memory",
    "resolve_preset": "presets",
}

__all__ = [
    # drop-in Auto classes and the model classes behind them
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
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
    "ValidationMode",
    "apply_chat_template",
    "get_chat_template",
    "list_templates",
    "load_tokenizer",
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
    "plan_memory",
    "resolve_preset",
]


# Submodules reachable as attributes (`hf_mistral_kit.native`), as when the package imported them all.
_SUBMODULES = (
    "auto",
    "cli",
    "conversation",
    "gguf",
    "hardware",
    "loading",
    "memory",
    "modeling",
    "moe_quant",
    "native",
    "presets",
    "templates",
    "tiny",
    "tokenizer",
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


if TYPE_CHECKING:  # what static tools and IDEs see: the same names, imported eagerly
    from .auto import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from .conversation import ConversationError, ValidationMode, prepare_chat
    from .gguf import GGUFError, load_gguf_tokenizer
    from .hardware import Hardware
    from .loading import load_model
    from .memory import MemoryPlan, plan_memory
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
    from .native import NativeCheckpointError, convert_checkpoint
    from .presets import PRESETS, Preset, PresetError, ResolvedPreset, resolve_preset
    from .templates import apply_chat_template, get_chat_template, list_templates, render
    from .tiny import tiny_model
    from .tokenizer import (
        MistralSentencePieceTokenizer,
        MistralTekkenTokenizer,
        MistralTokenizerBase,
        load_tokenizer,
        reference_tokenizer_file,
    )
