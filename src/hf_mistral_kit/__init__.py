"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast."""

# issue 2: chat templates and exact tokenizers
from .templates import apply_chat_template, get_chat_template, list_templates, render
from .tokenizer import MistralSentencePieceTokenizer, load_tokenizer, reference_tokenizer_file

__all__ = [
    "MistralSentencePieceTokenizer",
    "apply_chat_template",
    "get_chat_template",
    "list_templates",
    "load_tokenizer",
    "reference_tokenizer_file",
    "render",
]
