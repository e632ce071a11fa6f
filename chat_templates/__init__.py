"""The chat templates (plain Jinja files in this folder), importable as package data: ``hf_mistral_kit.chat_templates``."""
