"""Dimensions of the tiny random Mistral/Mixtral models the model tests build (GQA: 4 query heads over 2 KV heads)."""

TINY_SIZES = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    head_dim=16,
)
