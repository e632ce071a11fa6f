"""Chat: input forms to plain data, the conversation contract (mistral-common's rules per tokenizer version), and the
kit's Jinja templates. No torch, no transformers modeling code: `render` runs without either."""
