"""The hyperparameters of a Mistral-family model: ONE table of fields, their spellings, bounds and checks.

A field has transformers' name (`config.json`) and Mistral's native one (`params.json`, `moe.*` inside its `moe`
object); GGUF's metadata keys are `hf_mistral_kit.formats.gguf`'s key map. Every value is checked here, whatever file
it comes from, before anything is sized or allocated from it: it must have its type (an integer is not a bool or a
float, a float is finite), lie within bounds far above any released model, and agree with the others (attention heads
divide into key/value groups, experts per token <= experts, an even head size). Errors name the file and the field
as that file spells it. The translations between the spellings (`config_from_params`, `params_from_config`) are
derived from the same table.

Nothing here imports torch: `plan` and every checkpoint reader run these checks first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..architectures import architecture_with_experts, find_architecture

# Upper bounds, far above any released model (Mistral Large 2: 88 layers, dim 12288, vocabulary 32768; Mixtral 8x22B:
# 56 layers, 8 experts), so that a typo cannot make a planner or loader size billions of tensors.
MAX_LAYERS = 4096
MAX_HIDDEN = 1 << 17
MAX_INTERMEDIATE = 1 << 20
MAX_HEADS = 1 << 12
MAX_HEAD_DIM = 1 << 12
# Four times the largest Mistral vocabulary (tekken's 131072). It also bounds what a GGUF file may make the kit decode
# (`gguf_container`): no metadata array the kit reads is longer than a vocabulary.
MAX_VOCAB = 1 << 19
MAX_EXPERTS = 1 << 12
MAX_POSITIONS = 1 << 30

# Mistral 7B v0.1 (the one release whose params.json has no `rope_theta`) was trained with 10000.
DEFAULT_ROPE_THETA = 10_000.0
DEFAULT_MAX_POSITION_EMBEDDINGS = 32_768

SIZE, FRACTION, POSITIVE, WINDOW, FLAG = "size", "fraction", "positive", "window", "flag"


@dataclass(frozen=True)
class Field:
    name: str  # transformers' config key
    native: tuple[str, ...]  # params.json key(s), written in this order, the last one set wins when read; `moe.x`
    # is `x` inside the `moe` object
    kind: str  # SIZE (an integer 1..maximum), FRACTION (a number in (0, 1)), POSITIVE, WINDOW (a size or None), FLAG
    maximum: int = 0
    required: tuple[str, ...] = ()  # the spellings ("native", "transformers") in which the field must be present
    experts: bool = False  # a field of mixtures of experts only


BOTH, NATIVE_ONLY = ("native", "transformers"), ("native",)
FIELDS: tuple[Field, ...] = (
    Field("hidden_size", ("dim",), SIZE, MAX_HIDDEN, BOTH),
    Field("num_hidden_layers", ("n_layers",), SIZE, MAX_LAYERS, BOTH),
    Field("head_dim", ("head_dim",), SIZE, MAX_HEAD_DIM, NATIVE_ONLY),
    Field("intermediate_size", ("hidden_dim",), SIZE, MAX_INTERMEDIATE, BOTH),
    Field("num_attention_heads", ("n_heads",), SIZE, MAX_HEADS, BOTH),
    Field("num_key_value_heads", ("n_kv_heads",), SIZE, MAX_HEADS, NATIVE_ONLY),
    Field("rms_norm_eps", ("norm_eps",), FRACTION, required=NATIVE_ONLY),
    Field("vocab_size", ("vocab_size",), SIZE, MAX_VOCAB, BOTH),
    Field("rope_theta", ("rope_theta",), POSITIVE),
    # mistral-inference reads `max_seq_len`; Mistral's newer releases, vLLM (which otherwise assumes 128k) and
    # llama.cpp's converter read `max_position_embeddings`: both are written, and the newer one wins when read.
    Field("max_position_embeddings", ("max_seq_len", "max_position_embeddings"), SIZE, MAX_POSITIONS),
    Field("sliding_window", ("sliding_window",), WINDOW, MAX_POSITIONS),
    Field("tie_word_embeddings", ("tied_embeddings",), FLAG),
    Field("num_local_experts", ("moe.num_experts",), SIZE, MAX_EXPERTS, experts=True),
    Field("num_experts_per_tok", ("moe.num_experts_per_tok",), SIZE, MAX_EXPERTS, experts=True),
)
# params.json fields mistral-inference requires.
REQUIRED_PARAMS = tuple(field.native[0] for field in FIELDS if "native" in field.required)


# --- spellings ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spelling:
    """How one kind of file names the fields: `names[field]` (its first spelling names it in errors) and how an error
    introduces a field (`label(name, kind)`)."""

    names: Mapping[str, tuple[str, ...]]
    label: Callable[[str, str], str] = lambda name, kind: f"field {name!r}"
    required: frozenset[str] = frozenset()  # fields checked even when the file gives them as null

    def name(self, field: str) -> str:
        return self.names[field][0]


TRANSFORMERS = Spelling({field.name: (field.name,) for field in FIELDS})
NATIVE = Spelling(
    {field.name: field.native for field in FIELDS},
    required=frozenset(field.name for field in FIELDS if "native" in field.required),
)


def native_value(params: Mapping[str, Any], name: str) -> Any:
    """The value of a params.json key (`moe.x` inside its `moe` object; None when absent)."""
    if name.startswith("moe."):
        moe = params.get("moe")
        return moe.get(name[4:]) if isinstance(moe, Mapping) else None
    return params.get(name)


# --- checks -------------------------------------------------------------------------------------------------------


def _integer(value: Any, label: str, source: Any, error: type[Exception], minimum: int, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{source}: {label} must be an integer, got {shown(value)}.")
    if not minimum <= value <= maximum:
        raise error(f"{source}: {label} must be between {minimum} and {maximum}, got {value}.")
    return value


def _positive(value: Any, label: str, source: Any, error: type[Exception], below: float | None) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise error(f"{source}: {label} must be a number, got {shown(value)}.")
    if not math.isfinite(value) or value <= 0 or (below is not None and value >= below):
        limit = f" and below {below}" if below is not None else ""
        raise error(f"{source}: {label} must be a finite number above 0{limit}, got {value!r}.")
    return float(value)


def _check_value(field: Field, name: str, value: Any, source: Any, error: type[Exception], label: str) -> None:
    if field.kind == SIZE:
        _integer(value, label, source, error, 1, field.maximum)
    elif field.kind in (FRACTION, POSITIVE):
        _positive(value, label, source, error, 1 if field.kind == FRACTION else None)
    elif field.kind == WINDOW:
        if isinstance(value, list):
            raise error(f"{source}: a per-layer {name} (a list) is not supported; the kit reads one window for all.")
        _integer(value, label, source, error, 1, field.maximum)
    elif not isinstance(value, bool):
        raise error(f"{source}: {label} must be true or false, got {shown(value)}.")


def check_values(
    values: list[tuple[str, str, Any]],
    source: Any,
    error: type[Exception],
    spelling: Spelling,
    *,
    experts: bool,
) -> None:
    """Check `(field, spelled name, value)` entries of one file: each present value (the expert fields also when
    absent, for a mixture of experts), then how they agree."""
    given: dict[str, Any] = {}
    for field in FIELDS:
        entries = [(name, value) for key, name, value in values if key == field.name]
        if field.experts and experts and not any(value is not None for _, value in entries):
            entries = [(spelling.name(field.name), None)]
        for name, value in entries:
            checked = (field.experts and experts) or field.name in spelling.required or field.kind == FLAG
            if value is None and not checked:
                continue
            _check_value(field, name, value, source, error, spelling.label(name, field.kind))
            given.setdefault(field.name, value)

    def name(field: str) -> str:
        return spelling.name(field)

    head_dim, heads, kv_heads = given.get("head_dim"), given["num_attention_heads"], given.get("num_key_value_heads")
    if head_dim is not None and head_dim % 2:
        label = spelling.label(name("head_dim"), SIZE)
        raise error(f"{source}: {label} must be even (rotary embeddings pair its dimensions).")
    if kv_heads is not None and heads % kv_heads:
        raise error(
            f"{source}: {name('num_attention_heads')} ({heads}) must be a multiple of "
            f"{name('num_key_value_heads')} ({kv_heads})."
        )
    if head_dim is None and given["hidden_size"] % heads:
        raise error(
            f"{source}: {name('hidden_size')} ({given['hidden_size']}) must be a multiple of "
            f"{name('num_attention_heads')} ({heads}) when {name('head_dim')} is not given."
        )
    experts_count, per_token = given.get("num_local_experts"), given.get("num_experts_per_tok")
    if experts_count is not None and per_token is not None and per_token > experts_count:
        raise error(
            f"{source}: {name('num_experts_per_tok')} ({per_token}) cannot exceed "
            f"{name('num_local_experts')} ({experts_count})."
        )


def check_params(params: Any, source: Any, error: type[Exception]) -> None:
    """Check the contents of a native `params.json` (named `source` in errors): its shape, then every field."""
    if not isinstance(params, Mapping):
        raise error(f"{source} must hold a JSON object, got {type(params).__name__}.")
    missing = [name for name in REQUIRED_PARAMS if name not in params]
    if missing:
        raise error(
            f"{source} is missing required field(s) {', '.join(map(repr, missing))}; a Mistral native params.json "
            f"defines {', '.join(REQUIRED_PARAMS)} (and `moe` for Mixtral). Restore the file from the original "
            "release."
        )
    if not isinstance(params.get("model_type", "transformer"), str):
        raise error(f"{source}: field 'model_type' must be a string, got {shown(params['model_type'])}.")
    moe = params.get("moe")
    if moe is not None:
        if not isinstance(moe, Mapping):
            raise error(
                f"{source}: `moe` must be an object with num_experts and num_experts_per_tok, got {shown(moe)}."
            )
        missing = [name for name in ("num_experts", "num_experts_per_tok") if name not in moe]
        if missing:
            raise error(f"{source}: `moe` is missing field(s) {', '.join(map(repr, missing))}.")
    values = [
        (field.name, name, native_value(params, name))
        for field in FIELDS
        for name in field.native
        if not (field.kind == FLAG and name not in params)  # a flag given as null is checked (and refused)
    ]
    check_values(values, source, error, NATIVE, experts=moe is not None)


def check_config(config: Mapping[str, Any], source: Any, error: type[Exception] = ValueError) -> None:
    """Check a transformers Mistral/Mixtral config dict (`config.json`, `to_dict()`) the way `check_params` checks
    params.json. Missing optional fields take transformers' defaults; a `model_type` is not required here."""
    missing = [field.name for field in FIELDS if "transformers" in field.required and config.get(field.name) is None]
    if missing:
        raise error(
            f"{source} is not a Mistral/Mixtral config: it lacks {', '.join(map(repr, missing))} (a transformers "
            "config.json, or Mistral's params.json with dim, n_layers, ...)."
        )
    values = [(field.name, field.name, config.get(field.name)) for field in FIELDS if field.kind != FLAG]
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if isinstance(rope, Mapping):
        values.append(("rope_theta", "rope_parameters.rope_theta", rope.get("rope_theta")))
    architecture = find_architecture(config.get("model_type"))
    experts = config.get("num_local_experts") is not None or (architecture is not None and architecture.experts)
    check_values(values, source, error, TRANSFORMERS, experts=experts)


def bounds(name: str) -> str:
    """The range a field's value must lie in, as errors say it: "from 1 to 4096", "above 0 and below 1"."""
    field = next(field for field in FIELDS if field.name == name)
    if field.kind in (SIZE, WINDOW):
        return f"from 1 to {field.maximum}"
    return "above 0 and below 1" if field.kind == FRACTION else "above 0" if field.kind == POSITIVE else ""


def shown(value: Any) -> str:
    """A value in an error message, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- translations -------------------------------------------------------------------------------------------------


def config_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A checked params.json (`check_params`) as a transformers config dict (`model_type` from `ARCHITECTURES`)."""
    architecture = architecture_with_experts(params.get("moe") is not None)
    config: dict[str, Any] = {"model_type": architecture.model_type, "architectures": [architecture.causal_lm]}
    for field in FIELDS:
        value = next((native_value(params, n) for n in reversed(field.native) if native_value(params, n)), None)
        if field.experts and not architecture.experts:
            continue
        config[field.name] = value
    config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": float(config.pop("rope_theta") or DEFAULT_ROPE_THETA),
    }
    config["max_position_embeddings"] = config["max_position_embeddings"] or DEFAULT_MAX_POSITION_EMBEDDINGS
    config["tie_word_embeddings"] = bool(config["tie_word_embeddings"])
    return config


def params_from_config(config: Mapping[str, Any], error: type[Exception] = ValueError) -> dict[str, Any]:
    """A transformers Mistral/Mixtral config dict (`as_config_dict`) as a native `params.json` dict."""
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise error(f"rope_type {rope['rope_type']!r} has no params.json equivalent; only default RoPE models convert.")
    values = {**config, "head_dim": head_dim(config), "rope_theta": rope.get("rope_theta", DEFAULT_ROPE_THETA)}
    params: dict[str, Any] = {}
    for field in FIELDS:
        value = values.get(field.name)
        if value is None or (field.kind == FLAG and not value):  # optional fields are written when they are set
            continue
        for name in field.native:
            if name.startswith("moe."):
                params.setdefault("moe", {})[name[4:]] = value
            else:
                params[name] = value
    return params


def as_config_dict(config: Any) -> dict[str, Any]:
    """A transformers config (or config dict) as a dict whose `head_dim` is set (transformers computes it)."""
    if isinstance(config, Mapping):
        return dict(config)
    return {**config.to_dict(), "head_dim": getattr(config, "head_dim", None)}


def head_dim(config: Mapping[str, Any]) -> int:
    """The attention head size of a config dict: `head_dim`, else hidden size / heads (transformers' default)."""
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
