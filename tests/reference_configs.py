"""The public config.json of real Mistral checkpoints, as plain dicts (tests never touch the Hub)."""

# mistralai/Mistral-7B-v0.1
MISTRAL_7B = {
    "_name_or_path": "mistralai/Mistral-7B-v0.1",
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}

# mistralai/Mixtral-8x7B-v0.1
MIXTRAL_8X7B = {
    "_name_or_path": "mistralai/Mixtral-8x7B-v0.1",
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}

# Mistral's native params.json of Mixtral-8x7B (mistral-inference layout).
MIXTRAL_8X7B_PARAMS = {
    "dim": 4096,
    "n_layers": 32,
    "head_dim": 128,
    "hidden_dim": 14336,
    "n_heads": 32,
    "n_kv_heads": 8,
    "norm_eps": 1e-05,
    "vocab_size": 32000,
    "moe": {"num_experts_per_tok": 2, "num_experts": 8},
}

# mistralai/Mistral-Nemo-Instruct-2407 (tekken v3): head_dim 128 is not hidden_size / heads (160).
MISTRAL_NEMO = {
    "_name_or_path": "mistralai/Mistral-Nemo-Instruct-2407",
    "architectures": ["MistralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 1024000,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 40,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 131072,
}

# Its native params.json (no max_seq_len, no sliding window).
MISTRAL_NEMO_PARAMS = {
    "dim": 5120,
    "n_layers": 40,
    "head_dim": 128,
    "hidden_dim": 14336,
    "n_heads": 32,
    "n_kv_heads": 8,
    "rope_theta": 1000000.0,
    "norm_eps": 1e-05,
    "vocab_size": 131072,
}

# mistralai/Mistral-Small-24B-Instruct-2501 (tekken v7).
MISTRAL_SMALL_24B = {
    **{k: v for k, v in MISTRAL_NEMO.items() if k != "_name_or_path"},
    "_name_or_path": "mistralai/Mistral-Small-24B-Instruct-2501",
    "intermediate_size": 32768,
    "max_position_embeddings": 32768,
    "rope_theta": 100000000.0,
}

# mistralai/Mistral-Large-Instruct-2411 (SentencePiece v7).
MISTRAL_LARGE_2411 = {
    "_name_or_path": "mistralai/Mistral-Large-Instruct-2411",
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 12288,
    "intermediate_size": 28672,
    "max_position_embeddings": 131072,
    "model_type": "mistral",
    "num_attention_heads": 96,
    "num_hidden_layers": 88,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32768,
}

# --- 2024-26 releases -------------------------------------------------------------------------------------------------
# Reconstructed, not copied from the Hub (tests never touch it): the sizes are those of the releases (parameter counts
# as published); keys a reader may default (dropout, initializer range, token ids) are left out.

# mistralai/Ministral-8B-Instruct-2410: 36 layers, an interleaved sliding window (transformers' ministral). Its
# `layer_types` here (one full-attention layer in four) is illustrative: the counts do not depend on it.
MINISTRAL_8B_2410 = {
    "_name_or_path": "mistralai/Ministral-8B-Instruct-2410",
    "architectures": ["MinistralForCausalLM"],
    "model_type": "ministral",
    "head_dim": 128,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 36,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000000.0,
    "sliding_window": 32768,
    "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention"] * 9,
    "tie_word_embeddings": False,
    "vocab_size": 131072,
}

# The Pixtral vision tower of the Mistral Small 3.1/3.2, Ministral 3 and Mistral Small 4 releases.
PIXTRAL_VISION = {
    "model_type": "pixtral",
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "image_size": 1540,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "rope_theta": 10000.0,
}

# mistralai/Mistral-Small-3.2-24B-Instruct-2506: mistral3 around a mistral text model with an untied head (24.01B). Its
# config.json predates transformers' mistral3 `tie_word_embeddings` default (True), so it does not set one.
MISTRAL_SMALL_3_2 = {
    "_name_or_path": "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    "architectures": ["Mistral3ForConditionalGeneration"],
    "model_type": "mistral3",
    "image_token_index": 10,
    "multimodal_projector_bias": False,
    "projector_hidden_act": "gelu",
    "spatial_merge_size": 2,
    "vision_feature_layer": -1,
    "text_config": {
        "model_type": "mistral",
        "head_dim": 128,
        "hidden_size": 5120,
        "intermediate_size": 32768,
        "max_position_embeddings": 131072,
        "num_attention_heads": 32,
        "num_hidden_layers": 40,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000000.0,
        "sliding_window": None,
        "vocab_size": 131072,
    },
    "vision_config": PIXTRAL_VISION,
}

# mistralai/Ministral-3-8B-Instruct-2512: mistral3 around a ministral3 text model (YaRN, llama-4 query scaling).
MINISTRAL_3_8B = {
    "_name_or_path": "mistralai/Ministral-3-8B-Instruct-2512",
    "architectures": ["Mistral3ForConditionalGeneration"],
    "model_type": "mistral3",
    "image_token_index": 10,
    "multimodal_projector_bias": False,
    "spatial_merge_size": 2,
    "text_config": {
        "model_type": "ministral3",
        "head_dim": 128,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "max_position_embeddings": 262144,
        "num_attention_heads": 32,
        "num_hidden_layers": 34,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 1000000.0,
            "factor": 16.0,
            "original_max_position_embeddings": 16384,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "llama_4_scaling_beta": 0.1,
        },
        "tie_word_embeddings": False,
        "vocab_size": 131072,
    },
    "vision_config": PIXTRAL_VISION,
}

# mistralai/Mistral-Small-4-119B-2603: mistral3 around a mistral4 text model (MLA with a query LoRA, 128 routed experts
# + 1 shared, all layers MoE).
MISTRAL_SMALL_4 = {
    "_name_or_path": "mistralai/Mistral-Small-4-119B-2603",
    "architectures": ["Mistral3ForConditionalGeneration"],
    "model_type": "mistral3",
    "image_token_index": 10,
    "multimodal_projector_bias": False,
    "spatial_merge_size": 2,
    "text_config": {
        "model_type": "mistral4",
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "moe_intermediate_size": 2048,
        "max_position_embeddings": 1048576,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "num_hidden_layers": 36,
        "n_routed_experts": 128,
        "n_shared_experts": 1,
        "num_experts_per_tok": 4,
        "first_k_dense_replace": 0,
        "q_lora_rank": 1024,
        "kv_lora_rank": 256,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 64,
        "v_head_dim": 128,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "vocab_size": 131072,
    },
    "vision_config": PIXTRAL_VISION,
}

# mistralai/Mistral-Large-4-1T-A52B: the Large line (MoE + MLA without a query LoRA + the attention indexer; every
# fourth layer NoPE, layer 0 dense), with its own Pixtral tower.
MISTRAL_LARGE_4 = {
    "_name_or_path": "mistralai/Mistral-Large-4-1T-A52B",
    "architectures": ["MistralLarge4ForConditionalGeneration"],
    "model_type": "mistral_large4",
    "image_token_index": 10,
    "spatial_merge_size": 2,
    "text_config": {
        "model_type": "mistral_large4_text",
        "hidden_size": 6144,
        "intermediate_size": 24576,
        "moe_intermediate_size": 6144,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "num_hidden_layers": 72,
        "n_routed_experts": 128,
        "n_shared_experts": 1,
        "num_experts_per_tok": 4,
        "first_k_dense_replace": 1,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 64,
        "v_head_dim": 128,
        "index_topk": 2048,
        "index_head_dim": 128,
        "index_n_heads": 32,
        "tie_word_embeddings": False,
        "vocab_size": 204800,
    },
    "vision_config": {
        "model_type": "pixtral",
        "hidden_act": "silu",
        "hidden_size": 2048,
        "image_size": 1540,
        "intermediate_size": 6144,
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 30,
        "patch_size": 14,
    },
}
