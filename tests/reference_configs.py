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
