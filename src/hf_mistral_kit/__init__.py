"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast.

Importing the package registers the kit's Mistral/Mixtral classes with transformers' Auto classes under the kit's own
model types (`register()`); transformers' built-in `mistral`/`mixtral` mappings are left alone.
"""

from .auto import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
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
from .tokenizer import MistralSentencePieceTokenizer, load_tokenizer, reference_tokenizer_file

register()

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
    # chat templates and exact tokenizers
    "MistralSentencePieceTokenizer",
    "apply_chat_template",
    "get_chat_template",
    "list_templates",
    "load_tokenizer",
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
