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

# issue 3: models, native checkpoints, auto classes
from .auto import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from .modeling import (  # noqa: E402
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
from .native import NativeCheckpointError, convert_checkpoint  # noqa: E402
from .tiny import tiny_model  # noqa: E402

register()
__all__ += [
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
    "NativeCheckpointError",
    "convert_checkpoint",
    "register",
    "tiny_model",
]
