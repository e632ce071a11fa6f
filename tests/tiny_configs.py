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

# The 2025-26 architectures at 2 layers, as config dicts (`make_config` builds them). Every field named here was
# checked to build, run and save in transformers 5.25; mistral_large4 does not exist before 5.2x (see `available`).
_TEXT = dict(TINY_SIZES)
MINISTRAL = {
    "model_type": "ministral",
    **_TEXT,
    "sliding_window": 4,
    "layer_types": ["sliding_attention", "full_attention"],
}
MINISTRAL3 = {"model_type": "ministral3", **_TEXT}
# MLA with q-LoRA, one dense layer then one MoE layer (8 routed experts, top 2, one shared expert).
MISTRAL4 = {
    "model_type": "mistral4",
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "q_lora_rank": 48,
    "kv_lora_rank": 32,
    "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
}
PIXTRAL = {
    "model_type": "pixtral",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "head_dim": 8,
    "patch_size": 4,
    "image_size": 32,
    "num_channels": 3,
}
# Mistral Small 3.x-style (mistral text model), Ministral 3 (ministral3 text), Small 4 (mistral4 text).
MISTRAL3 = {
    "model_type": "mistral3",
    "text_config": {**_TEXT, "model_type": "mistral"},
    "vision_config": dict(PIXTRAL),
    "image_token_index": 10,
    "spatial_merge_size": 2,
    "tie_word_embeddings": False,
}
MISTRAL3_MINISTRAL3 = {**MISTRAL3, "text_config": dict(MINISTRAL3)}
MISTRAL3_MISTRAL4 = {**MISTRAL3, "text_config": dict(MISTRAL4)}
# MoE + MLA without q-LoRA + the attention indexer; layer 1 is NoPE (no rotary part).
MISTRAL_LARGE4_TEXT = {key: value for key, value in MISTRAL4.items() if key not in ("model_type", "q_lora_rank")} | {
    "model_type": "mistral_large4_text",
    "index_topk": 4,
    "index_head_dim": 16,
    "index_n_heads": 2,
    "no_rope_layers": [1, 0],
}
MISTRAL_LARGE4 = {
    "model_type": "mistral_large4",
    "text_config": dict(MISTRAL_LARGE4_TEXT),
    "vision_config": {**PIXTRAL, "hidden_act": "silu"},
    "image_token_index": 10,
    "spatial_merge_size": 2,
}

NEW_ARCHITECTURES = {
    "ministral": MINISTRAL,
    "ministral3": MINISTRAL3,
    "mistral4": MISTRAL4,
    "mistral3": MISTRAL3,
    "mistral_large4": MISTRAL_LARGE4,
}


def available(model_type: str) -> bool:
    """Whether the installed transformers defines `model_type` (mistral_large4 arrived after 5.10)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def make_config(config: dict):
    """A transformers config object (upstream class) from one of the dicts above."""
    from transformers import AutoConfig

    config = dict(config)
    return AutoConfig.for_model(config.pop("model_type"), **config)
