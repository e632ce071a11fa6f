"""Validation of Mistral/Mixtral hyperparameters, before anything is sized or allocated from them.

Both spellings are checked: Mistral's native `params.json` (`dim`, `n_layers`, `moe`, ...) and transformers'
`config.json` (`hidden_size`, `num_hidden_layers`, `num_local_experts`, ...). Every value must have its type (an
integer is not a bool or a float, a float is finite), lie within bounds far above any released model, and agree with
the others (attention heads divide into key/value groups, experts per token <= experts, a window > 0). Errors name the
file and the field. Nothing here imports torch: `plan` and the native loader run these checks first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Upper bounds, far above any released model (Mistral Large 2: 88 layers, dim 12288, vocabulary 32768; Mixtral 8x22B:
# 56 layers, 8 experts), so that a typo cannot make a planner or loader size billions of tensors.
MAX_LAYERS = 4096
MAX_HIDDEN = 1 << 17
MAX_INTERMEDIATE = 1 << 20
MAX_HEADS = 1 << 12
MAX_HEAD_DIM = 1 << 12
MAX_VOCAB = 1 << 22
MAX_EXPERTS = 1 << 12
MAX_POSITIONS = 1 << 30

# transformers model types of the Mistral family (the kit's own in-memory ones included).
MISTRAL_MODEL_TYPES = ("mistral", "mixtral", "hf_mistral_kit_mistral", "hf_mistral_kit_mixtral")


def integer(value: Any, field: str, source: Any, error: type[Exception], *, minimum: int = 1, maximum: int) -> int:
    """`value` if it is an int in [minimum, maximum] (bools and floats refused), else `error` naming `field`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{source}: field {field!r} must be an integer, got {_shown(value)}.")
    if not minimum <= value <= maximum:
        raise error(f"{source}: field {field!r} must be between {minimum} and {maximum}, got {value}.")
    return value


def positive_number(
    value: Any, field: str, source: Any, error: type[Exception], *, below: float | None = None
) -> float:
    """`value` as a float if it is a finite number > 0 (and < `below`), else `error` naming `field`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise error(f"{source}: field {field!r} must be a number, got {_shown(value)}.")
    if not math.isfinite(value) or value <= 0 or (below is not None and value >= below):
        limit = f" and below {below}" if below is not None else ""
        raise error(f"{source}: field {field!r} must be a finite number above 0{limit}, got {value!r}.")
    return float(value)


def check_params(params: Any, source: Any, error: type[Exception]) -> None:
    """Check the fields of a native `params.json` (its contents, named `source` in errors) that the kit reads."""
    if not isinstance(params, Mapping):
        raise error(f"{source} must hold a JSON object, got {type(params).__name__}.")
    for field, maximum in (
        ("dim", MAX_HIDDEN),
        ("n_layers", MAX_LAYERS),
        ("head_dim", MAX_HEAD_DIM),
        ("hidden_dim", MAX_INTERMEDIATE),
        ("n_heads", MAX_HEADS),
        ("n_kv_heads", MAX_HEADS),
        ("vocab_size", MAX_VOCAB),
    ):
        integer(params[field], field, source, error, maximum=maximum)
    positive_number(params["norm_eps"], "norm_eps", source, error, below=1)
    if params["head_dim"] % 2:
        raise error(f"{source}: field 'head_dim' must be even (rotary embeddings pair its dimensions).")
    if params["n_heads"] % params["n_kv_heads"]:
        raise error(
            f"{source}: n_heads ({params['n_heads']}) must be a multiple of n_kv_heads ({params['n_kv_heads']})."
        )
    if params.get("rope_theta") is not None:
        positive_number(params["rope_theta"], "rope_theta", source, error)
    for name in ("max_seq_len", "max_position_embeddings"):
        if params.get(name) is not None:
            integer(params[name], name, source, error, maximum=MAX_POSITIONS)
    _check_window(params.get("sliding_window"), "sliding_window", source, error)
    if not isinstance(params.get("tied_embeddings", False), bool):
        shown = _shown(params["tied_embeddings"])
        raise error(f"{source}: field 'tied_embeddings' must be true or false, got {shown}.")
    if not isinstance(params.get("model_type", "transformer"), str):
        raise error(f"{source}: field 'model_type' must be a string, got {_shown(params['model_type'])}.")
    moe = params.get("moe")
    if moe is None:
        return
    if not isinstance(moe, Mapping):
        raise error(f"{source}: `moe` must be an object with num_experts and num_experts_per_tok, got {_shown(moe)}.")
    missing = [name for name in ("num_experts", "num_experts_per_tok") if name not in moe]
    if missing:
        raise error(f"{source}: `moe` is missing field(s) {', '.join(map(repr, missing))}.")
    _check_experts(moe["num_experts"], moe["num_experts_per_tok"], "moe.num_experts", source, error)


def check_config(config: Mapping[str, Any], source: Any, error: type[Exception] = ValueError) -> None:
    """Check a transformers Mistral/Mixtral config dict (`config.json`, `to_dict()`) the way `check_params` checks
    params.json. Missing optional fields take transformers' defaults; a `model_type` is not required here."""
    missing = [
        name
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if config.get(name) is None
    ]
    if missing:
        raise error(
            f"{source} is not a Mistral/Mixtral config: it lacks {', '.join(map(repr, missing))} (a transformers "
            "config.json, or Mistral's params.json with dim, n_layers, ...)."
        )
    for field, maximum in (
        ("hidden_size", MAX_HIDDEN),
        ("intermediate_size", MAX_INTERMEDIATE),
        ("num_hidden_layers", MAX_LAYERS),
        ("num_attention_heads", MAX_HEADS),
        ("vocab_size", MAX_VOCAB),
    ):
        integer(config[field], field, source, error, maximum=maximum)
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads")
    if kv_heads is not None:
        integer(kv_heads, "num_key_value_heads", source, error, maximum=MAX_HEADS)
        if heads % kv_heads:
            raise error(
                f"{source}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})."
            )
    if config.get("head_dim") is not None:
        integer(config["head_dim"], "head_dim", source, error, maximum=MAX_HEAD_DIM)
    elif config["hidden_size"] % heads:
        raise error(
            f"{source}: hidden_size ({config['hidden_size']}) must be a multiple of num_attention_heads ({heads}) "
            "when head_dim is not given."
        )
    if config.get("max_position_embeddings") is not None:
        integer(config["max_position_embeddings"], "max_position_embeddings", source, error, maximum=MAX_POSITIONS)
    _check_window(config.get("sliding_window"), "sliding_window", source, error)
    if config.get("rms_norm_eps") is not None:
        positive_number(config["rms_norm_eps"], "rms_norm_eps", source, error, below=1)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = rope.get("rope_theta") if isinstance(rope, Mapping) else None
    for field, value in (("rope_theta", config.get("rope_theta")), ("rope_parameters.rope_theta", theta)):
        if value is not None:
            positive_number(value, field, source, error)
    experts = config.get("num_local_experts")
    if experts is not None or config.get("model_type") in ("mixtral", "hf_mistral_kit_mixtral"):
        _check_experts(experts, config.get("num_experts_per_tok"), "num_local_experts", source, error)


def _check_experts(experts: Any, per_token: Any, field: str, source: Any, error: type[Exception]) -> None:
    per_token_field = field.rsplit(".", 1)[0] + ".num_experts_per_tok" if "." in field else "num_experts_per_tok"
    integer(experts, field, source, error, maximum=MAX_EXPERTS)
    integer(per_token, per_token_field, source, error, maximum=MAX_EXPERTS)
    if per_token > experts:
        raise error(f"{source}: {per_token_field} ({per_token}) cannot exceed {field} ({experts}).")


def _check_window(value: Any, field: str, source: Any, error: type[Exception]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        raise error(f"{source}: a per-layer {field} (a list) is not supported; the kit reads one window for all.")
    integer(value, field, source, error, maximum=MAX_POSITIONS)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
