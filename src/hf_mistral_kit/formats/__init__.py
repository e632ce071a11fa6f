"""Checkpoint formats: Mistral's native layout, llama.cpp's GGUF, and Hugging Face directories read for conversions.

`hyperparameters` (the one table of config fields, their spellings and checks) and `names` (the one table of tensor
names) are the facts; `tensors` and `files` read and write weights lazily; `native`, `gguf` (+ `gguf_vocabulary`) and
`huggingface` are the readers and writers, each a `checkpoint.Checkpoint`; `dispatch` opens any of them. Nothing here
imports the kit's model classes.
"""
