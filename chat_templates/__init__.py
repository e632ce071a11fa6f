"""The chat templates: plain Jinja files in this folder, shipped as ``hf_mistral_kit.chat_templates``."""
