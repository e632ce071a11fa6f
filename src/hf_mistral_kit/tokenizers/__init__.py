"""Mistral tokenizers as real fast transformers tokenizers whose ids equal mistral-common's, token for token.

`base` (what both kinds share: chat encoding, decoding, saving), `sentencepiece` and `tekken` (one kind of file
each: the exact `tokenizers` pipeline and the class), `escaping` (control-token spellings in a conversation stay
text), `loading` (files, directories and folders the kit saved).
"""
