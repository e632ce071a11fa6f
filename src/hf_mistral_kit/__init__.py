"""hf-mistral-kit: the Mistral model family on Hugging Face transformers, correct and fast."""

__all__: list[str] = []
