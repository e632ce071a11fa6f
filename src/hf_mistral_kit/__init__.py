"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast."""

# issue 2: chat templates and exact tokenizers
from .templates import apply_chat_template, get_chat_template, list_templates, render
from .tokenizer import MistralSentencePieceTokenizer, load_tokenizer, reference_tokenizer_file

# issue 4: presets, hardware, memory planning, loading
# isort: split
from .hardware import Hardware
from .loading import load_model
from .memory import MemoryPlan, plan_memory
from .presets import PRESETS, Preset, PresetError, ResolvedPreset, resolve_preset

__all__ = [
    "MistralSentencePieceTokenizer",
    "apply_chat_template",
    "get_chat_template",
    "list_templates",
    "load_tokenizer",
    "reference_tokenizer_file",
    "render",
    # issue 4: presets, hardware, memory planning, loading
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
