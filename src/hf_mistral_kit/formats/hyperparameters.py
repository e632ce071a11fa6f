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

from ..architectures import architecture, find_architecture

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
COUNT = "count"  # an integer 0..maximum


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

# Fields of multi-head latent attention and DeepSeek-style experts (Mistral 4, the Large line): transformers' names
# (Mistral 4's params.json spellings are `_latent_config`'s). `required` names the decoder layouts
# (`formats.names.layout`) whose complete config must give the field; transformers' config classes fill in what a
# config.json leaves out.
MISTRAL4, LARGE4 = "mistral4", "mistral_large4"
MLA_LAYOUTS = (MISTRAL4, LARGE4)
LATENT_FIELDS: tuple[Field, ...] = (
    Field("n_routed_experts", (), SIZE, MAX_EXPERTS),
    Field("moe_intermediate_size", (), SIZE, MAX_INTERMEDIATE, MLA_LAYOUTS),
    Field("n_shared_experts", (), COUNT, MAX_EXPERTS),
    Field("first_k_dense_replace", (), COUNT, MAX_LAYERS),
    Field("q_lora_rank", (), SIZE, MAX_HIDDEN),
    Field("kv_lora_rank", (), SIZE, MAX_HIDDEN, MLA_LAYOUTS),
    Field("qk_rope_head_dim", (), SIZE, MAX_HEAD_DIM, MLA_LAYOUTS),
    Field("qk_nope_head_dim", (), SIZE, MAX_HEAD_DIM, MLA_LAYOUTS),
    Field("v_head_dim", (), SIZE, MAX_HEAD_DIM, MLA_LAYOUTS),
    Field("index_n_heads", (), SIZE, MAX_HEADS, (LARGE4,)),
    Field("index_head_dim", (), SIZE, MAX_HEAD_DIM, (LARGE4,)),
)
# A vision-language wrapper's Pixtral tower (`vision_config`), checked when the whole model is planned.
VISION_FIELDS: tuple[Field, ...] = (
    Field("hidden_size", (), SIZE, MAX_HIDDEN, BOTH),
    Field("intermediate_size", (), SIZE, MAX_INTERMEDIATE, BOTH),
    Field("num_hidden_layers", (), SIZE, MAX_LAYERS, BOTH),
    Field("num_attention_heads", (), SIZE, MAX_HEADS, BOTH),
    Field("patch_size", (), SIZE, MAX_HIDDEN, BOTH),
    Field("head_dim", (), SIZE, MAX_HEAD_DIM),
    Field("num_channels", (), SIZE, MAX_HEADS),
)


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
    elif field.kind == COUNT:
        _integer(value, label, source, error, 0, field.maximum)
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


# --- params.json: what the kit reads besides FIELDS -----------------------------------------------------------------

# Top-level params.json keys read besides FIELDS' spellings. Anything else is refused: a key the kit does not know may
# change the model, and a wrong model loaded silently is worse than none.
PARAMS_SECTIONS = ("moe", "yarn", "llama_4_scaling", "vision_encoder")
# Keys that do not describe the text model (mistral-inference's batch size, the storage dtype, the name a planner
# adds) or that are checked by the reader (`model_type`, `lora`, `quantization`, `activation`).
PARAMS_OTHER = ("model_type", "lora", "quantization", "activation", "max_batch_size", "dtype", "_name_or_path")
# YaRN as Mistral's params.json spells it (vLLM's and llama.cpp's readers) -> transformers' `rope_parameters` names.
YARN_PARAMS = {
    "factor": "factor",
    "original_max_position_embeddings": "original_max_position_embeddings",
    "beta": "beta_fast",
    "alpha": "beta_slow",
}
LLAMA_4_SCALING_PARAMS = ("original_max_position_embeddings", "beta")
# Multi-head latent attention (Mistral Small 4, read as transformers' mistral4 as its converter
# convert_mistral4_weight_to_hf.py does): the params.json keys, required unless None is their default.
LATENT_PARAMS = {"q_lora_rank": None, "kv_lora_rank": 0, "qk_rope_head_dim": 0, "qk_nope_head_dim": 0, "v_head_dim": 0}
# Its DeepSeek-style experts: `moe` key -> (transformers' name, the default of transformers' converter; None: required).
DEEPSEEK_MOE_PARAMS = {
    "num_experts": ("n_routed_experts", None),
    "num_experts_per_tok": ("num_experts_per_tok", None),
    "expert_hidden_dim": ("moe_intermediate_size", None),
    "first_k_dense_replace": ("first_k_dense_replace", 0),
    "num_shared_experts": ("n_shared_experts", 1),
    "routed_scale": ("routed_scaling_factor", 1.0),
    "num_expert_groups": ("n_group", 1),
    "num_expert_groups_per_tok": ("topk_group", 1),
}
# `moe` keys vLLM reads that transformers' Mistral 4 has one value of: accepted with that value only.
DEEPSEEK_MOE_FIXED = {"route_every_n": 1, "renorm_strategy": "WEIGHTS", "use_load_balancing_bias": False}
LATENT_ROUTE = (
    "Load the model's Hugging Face release (the folder with config.json) instead, or convert this folder with "
    "transformers' convert_mistral4_weight_to_hf.py"
)
# What a native checkpoint of a vision-language model holds beside its text model: dropped when a causal LM loads it.
VISION_PREFIXES = ("vision_encoder.", "vision_language_adapter.", "patch_merger.", "pre_mm_projector_norm.")
# transformers' rope_parameters keys of a YaRN model that have a params.json spelling (`params_from_config`).
_YARN_CONFIG_KEYS = frozenset(
    {
        "rope_type",
        "type",
        "rope_theta",
        "mscale",
        "mscale_all_dim",
        "attention_factor",
        "truncate",
        "llama_4_scaling_beta",
        "max_position_embeddings",
        *YARN_PARAMS.values(),
    }
)


def _section(params: Mapping[str, Any], name: str, keys: tuple[str, ...], source: Any, error: type[Exception]):
    """A params.json object `name` holding exactly `keys`, or None when absent."""
    section = params.get(name)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise error(f"{source}: `{name}` must be an object with {', '.join(keys)}, got {shown(section)}.")
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise error(
            f"{source}: `{name}` has key(s) {', '.join(map(repr, unknown))} the kit does not know; it refuses the file "
            f"rather than load a different model (known: {', '.join(keys)})."
        )
    missing = [key for key in keys if key not in section]
    if missing:
        raise error(f"{source}: `{name}` is missing {', '.join(map(repr, missing))}.")
    return section


def _window_pattern(window: list, source: Any, error: type[Exception]) -> int:
    """The one window size of a per-layer `sliding_window` (a window or null per layer, repeated over the layers, as
    vLLM reads it)."""
    sizes = {size for size in window if size is not None}
    if not window or any(not isinstance(size, int) or isinstance(size, bool) for size in sizes) or len(sizes) != 1:
        raise error(
            f"{source}: a per-layer sliding_window must list one window size (an integer) or null (full attention) "
            f"per layer, with a single size, got {shown(window)}."
        )
    return sizes.pop()


def _check_sections(params: Mapping[str, Any], source: Any, error: type[Exception]) -> None:
    yarn = _section(params, "yarn", (*YARN_PARAMS, "apply_scale"), source, error)
    if yarn is not None:
        _positive(yarn["factor"], "'yarn.factor'", source, error, None)
        _integer(
            yarn["original_max_position_embeddings"],
            "'yarn.original_max_position_embeddings'",
            source,
            error,
            1,
            MAX_POSITIONS,
        )
        _positive(yarn["beta"], "'yarn.beta'", source, error, None)
        _positive(yarn["alpha"], "'yarn.alpha'", source, error, None)
        if yarn["apply_scale"] is not False and not is_latent_params(params):
            raise error(
                f"{source}: yarn.apply_scale is {shown(yarn['apply_scale'])}; only false (no attention magnitude "
                "correction: transformers' mscale = mscale_all_dim = 1, as Mistral's releases and transformers' own "
                "conversion use) maps exactly onto a transformers model (vLLM and llama.cpp read true differently)."
            )
        if params.get("rope_theta") is None:
            raise error(f"{source}: a `yarn` model must give rope_theta (no default is the same in every reader).")
    scaling = _section(params, "llama_4_scaling", LLAMA_4_SCALING_PARAMS, source, error)
    if scaling is not None:
        _positive(scaling["beta"], "'llama_4_scaling.beta'", source, error, None)
        if yarn is None or scaling["original_max_position_embeddings"] != yarn["original_max_position_embeddings"]:
            raise error(
                f"{source}: llama_4_scaling must come with `yarn` and the same original_max_position_embeddings "
                "(transformers' Ministral 3 scales queries by YaRN's); this params.json has no transformers model."
            )
        if params.get("moe") is not None and not is_latent_params(params):
            raise error(f"{source}: llama_4_scaling with a Mixtral `moe` has no transformers model.")
    if isinstance(params.get("sliding_window"), list):
        layers = params["n_layers"]
        if layers % len(params["sliding_window"]):
            raise error(
                f"{source}: a per-layer sliding_window of {len(params['sliding_window'])} entries does not repeat "
                f"evenly over n_layers ({layers})."
            )
        if scaling is not None or params.get("moe") is not None:  # (latent attention models have `moe`)
            raise error(
                f"{source}: per-layer sliding windows exist only in Ministral-8B-style dense models "
                "(transformers' ministral); this params.json also has llama_4_scaling or moe."
            )
    vision = params.get("vision_encoder")
    if vision is not None and not isinstance(vision, Mapping):
        raise error(f"{source}: `vision_encoder` must be an object, got {shown(vision)}.")
    activation = params.get("activation", "silu")
    if activation != "silu":
        raise error(f"{source}: activation {shown(activation)} is not Mistral's silu; the kit cannot load it exactly.")


def is_latent_params(params: Mapping[str, Any]) -> bool:
    """Whether a params.json describes multi-head latent attention (Mistral Small 4's layout)."""
    return any(params.get(name) is not None for name in LATENT_PARAMS)


def _check_latent(params: Mapping[str, Any], source: Any, error: type[Exception]) -> None:
    """The latent attention, DeepSeek-style experts and RoPE of a Mistral 4 params.json."""
    for name, default in LATENT_PARAMS.items():
        value = params.get(name)
        if value is None and default is None:
            continue
        maximum = MAX_HEAD_DIM if name.endswith("head_dim") else MAX_HIDDEN
        _integer(value, f"field {name!r}", source, error, 1, maximum)
    if params["qk_rope_head_dim"] % 2:
        raise error(f"{source}: field 'qk_rope_head_dim' must be even (rotary embeddings pair its dimensions).")
    moe = params.get("moe")
    if moe is None:
        raise error(
            f"{source}: latent attention without `moe` (a dense model) has no transformers class the kit loads. "
            f"{LATENT_ROUTE}."
        )
    for key, (_, default) in DEEPSEEK_MOE_PARAMS.items():
        value = moe.get(key, default)
        label = f"'moe.{key}'"
        if value is None:
            raise error(f"{source}: `moe` is missing {key!r}, which Mistral 4's experts need.")
        if key == "routed_scale":
            _positive(value, label, source, error, None)
        elif key in ("first_k_dense_replace", "num_shared_experts"):
            _integer(value, label, source, error, 0, params["n_layers"] if key.startswith("first") else MAX_EXPERTS)
        else:
            _integer(value, label, source, error, 1, MAX_INTERMEDIATE if key == "expert_hidden_dim" else MAX_EXPERTS)
    groups, per_token = moe.get("num_expert_groups", 1), moe.get("num_expert_groups_per_tok", 1)
    if moe["num_experts"] % groups or per_token > groups:
        raise error(
            f"{source}: moe.num_expert_groups ({groups}) must divide moe.num_experts ({moe['num_experts']}) and be at "
            f"least moe.num_expert_groups_per_tok ({per_token})."
        )
    for key, value in DEEPSEEK_MOE_FIXED.items():
        if key in moe and moe[key] != value:
            raise error(
                f"{source}: moe.{key} is {shown(moe[key])}; transformers' Mistral 4 has {value!r} only. {LATENT_ROUTE}."
            )
    if params.get("yarn") is None or params.get("llama_4_scaling") is None:
        raise error(
            f"{source}: Mistral 4's latent attention comes with `yarn` and `llama_4_scaling` (transformers' converter "
            "requires them); this params.json lacks one."
        )
    if params.get("sliding_window") is not None:
        raise error(f"{source}: a sliding window with latent attention has no transformers model.")


def check_params(params: Any, source: Any, error: type[Exception]) -> None:
    """Check the contents of a native `params.json` (named `source` in errors): its shape, every field and section
    (`yarn`, `llama_4_scaling`, a per-layer `sliding_window`), and that it holds no key the kit does not know."""
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
    latent = is_latent_params(params)
    known = {name.split(".")[0] for field in FIELDS for name in field.native} | set(PARAMS_SECTIONS + PARAMS_OTHER)
    known |= set(LATENT_PARAMS)
    unknown = sorted(name for name in params if name not in known)
    if unknown:
        raise error(
            f"{source}: field(s) {', '.join(map(repr, unknown))} are not ones the kit knows; it refuses the file "
            "rather than load a model that may differ from the one described. Load the Hugging Face release instead."
        )
    allowed = set(DEEPSEEK_MOE_PARAMS) | set(DEEPSEEK_MOE_FIXED) if latent else {"num_experts", "num_experts_per_tok"}
    unknown = sorted(set(moe or ()) - allowed)
    if unknown:
        kind = "Mistral 4's (multi-head latent attention)" if latent else "Mixtral's"
        raise error(
            f"{source}: `moe` field(s) {', '.join(map(repr, unknown))} are not {kind}; the kit refuses the file rather "
            f"than load a different model. {LATENT_ROUTE if latent else 'Load the Hugging Face release instead'}."
        )
    values = []
    for field in FIELDS:
        for name in field.native:
            if field.kind == FLAG and name not in params:
                continue  # a flag given as null is checked (and refused)
            value = native_value(params, name)
            if field.kind == WINDOW and isinstance(value, list):
                value = _window_pattern(value, source, error)
            values.append((field.name, name, value))
    check_values(values, source, error, NATIVE, experts=moe is not None)
    _check_sections(params, source, error)
    if latent:
        _check_latent(params, source, error)


def text_config_dict(
    config: Mapping[str, Any], *, vision: bool = False, source: Any = "the config", error: type[Exception] = ValueError
) -> dict[str, Any]:
    """The text model's config dict of a transformers config dict: a vision-language wrapper's (mistral3, the Large
    line) `text_config`, whose own `tie_word_embeddings` (default False) decides whether the output head is tied (the
    wrapper's flag does not: mistral3's defaults to True while its text models, and `from_pretrained` of a checkpoint
    holding an lm_head, keep the head), else the dict itself; `num_local_experts` set from `n_routed_experts` (the
    spelling of Mistral 4's and the Large line's config.json). With `vision`, a wrapper's `vision_config` and
    `spatial_merge_size` come along, for planning the whole vision-language model."""
    row = find_architecture(config.get("model_type"))
    if row is not None and row.vision:
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise error(
                f"{source}: a {config['model_type']} config describes its text model in `text_config`, which is "
                f"{'missing' if text is None else shown(text)}; restore the config.json of the release."
            )
        result = dict(text)
        result.setdefault("model_type", "mistral_large4_text" if row.latent_attention else "mistral")
        result.setdefault("tie_word_embeddings", False)
        if config.get("_name_or_path"):
            result["_name_or_path"] = config["_name_or_path"]
        if vision:
            result["vision_config"] = config.get("vision_config")
            result["spatial_merge_size"] = config.get("spatial_merge_size") or 2
            if not isinstance(result["vision_config"], Mapping):
                raise error(f"{source}: a {config['model_type']} config without a `vision_config` object.")
    else:
        result = dict(config)
    if result.get("num_local_experts") is None and result.get("n_routed_experts") is not None:
        result["num_local_experts"] = result["n_routed_experts"]
    return result


def _latent_layout(config: Mapping[str, Any]) -> str | None:
    """MISTRAL4 or LARGE4 for a text config of multi-head latent attention, else None."""
    model_type = config.get("model_type")
    row = find_architecture(model_type.removesuffix("_text") if isinstance(model_type, str) else None)
    if row is None or not row.latent_attention:
        return None
    return LARGE4 if row.model_type == LARGE4 else MISTRAL4


def check_present(config: Mapping[str, Any], source: Any, error: type[Exception] = ValueError) -> None:
    """Check the values a (text) config dict gives, each against its bounds, requiring none: what runs before
    transformers' config class fills in its defaults (so that a typo cannot make it build huge per-layer lists). Of a
    vision-language wrapper, its `text_config` if it gives one."""
    row = find_architecture(config.get("model_type"))
    if row is not None and row.vision:
        config = text_config_dict(config) if isinstance(config.get("text_config"), Mapping) else {}
    for field in FIELDS + LATENT_FIELDS:
        value = config.get(field.name)
        if value is not None and field.kind != FLAG:
            _check_value(field, field.name, value, source, error, TRANSFORMERS.label(field.name, field.kind))


def _check_more(config: Mapping[str, Any], source: Any, error: type[Exception]) -> None:
    """The fields of latent attention and DeepSeek-style experts, and a vision tower's, of a text config dict."""
    layout = _latent_layout(config)
    for field in LATENT_FIELDS:
        value = config.get(field.name)
        if value is None and layout in field.required:
            raise error(
                f"{source}: a {config.get('model_type')} config must give {field.name!r} (transformers' config class "
                "fills it in: load the config with transformers, or restore the config.json of the release)."
            )
        if value is not None:
            _check_value(field, field.name, value, source, error, f"field {field.name!r}")
    if layout == LARGE4 and config["index_head_dim"] < config["qk_rope_head_dim"]:
        raise error(f"{source}: index_head_dim must be at least qk_rope_head_dim (the indexer splits off its rope).")
    vision = config.get("vision_config")
    if isinstance(vision, Mapping):
        for field in VISION_FIELDS:
            value = vision.get(field.name)
            if value is not None or field.required:
                _check_value(field, field.name, value, source, error, f"field 'vision_config.{field.name}'")


def check_config(config: Mapping[str, Any], source: Any, error: type[Exception] = ValueError) -> None:
    """Check a transformers config dict of the family (`config.json`, `to_dict()`) the way `check_params` checks
    params.json: of a vision-language wrapper, its text model (`text_config_dict`). Missing optional fields take
    transformers' defaults; a `model_type` is not required here."""
    config = text_config_dict(config, source=source, error=error)
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
    experts = experts or _latent_layout(config) is not None
    check_values(values, source, error, TRANSFORMERS, experts=experts)
    _check_more(config, source, error)


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


def _latent_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """A checked Mistral 4 params.json as transformers' mistral4 config dict, as convert_mistral4_weight_to_hf.py
    translates it: YaRN with mscale = mscale_all_dim = 1 whatever `apply_scale` says (latent attention folds
    mscale_all_dim into its softmax scale, as vLLM's and llama.cpp's readers do too), the rotary slice as a partial
    rotary factor, the DeepSeek-style experts with that converter's defaults."""
    row = architecture("mistral4")
    config: dict[str, Any] = {"model_type": row.model_type, "architectures": [row.causal_lm]}
    for field in FIELDS:
        value = next((native_value(params, n) for n in reversed(field.native) if native_value(params, n)), None)
        if not field.experts and field.name not in ("head_dim", "sliding_window", "rope_theta"):
            config[field.name] = value
    for name in LATENT_PARAMS:
        config[name] = params.get(name)
    moe = params["moe"]
    for key, (name, default) in DEEPSEEK_MOE_PARAMS.items():
        config[name] = moe.get(key, default)
    config["routed_scaling_factor"] = float(config["routed_scaling_factor"])
    config["norm_topk_prob"] = True
    yarn, rope, nope = params["yarn"], params["qk_rope_head_dim"], params["qk_nope_head_dim"]
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": float(params["rope_theta"]),
        "factor": float(yarn["factor"]),
        "original_max_position_embeddings": int(yarn["original_max_position_embeddings"]),
        "beta_fast": float(yarn["beta"]),
        "beta_slow": float(yarn["alpha"]),
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": float(params["llama_4_scaling"]["beta"]),
        "partial_rotary_factor": rope / (nope + rope),
    }
    default_max = int(yarn["factor"] * yarn["original_max_position_embeddings"])
    config["max_position_embeddings"] = config["max_position_embeddings"] or default_max
    config["tie_word_embeddings"] = bool(config["tie_word_embeddings"])
    return config


def config_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A checked params.json (`check_params`) as a transformers config dict of the text model (`model_type` mixtral
    with `moe`, ministral3 with `llama_4_scaling`, ministral with a per-layer `sliding_window`, else mistral; the
    rows of `ARCHITECTURES`). A `vision_encoder` section is left out: it describes the vision tower beside the text
    model."""
    if is_latent_params(params):
        return _latent_config(params)
    window, yarn, scaling = params.get("sliding_window"), params.get("yarn"), params.get("llama_4_scaling")
    per_layer = window if isinstance(window, list) else None
    model_type = (
        "mixtral"
        if params.get("moe") is not None
        else "ministral3"
        if scaling
        else "ministral"
        if per_layer
        else "mistral"
    )
    row = architecture(model_type)
    config: dict[str, Any] = {"model_type": row.model_type, "architectures": [row.causal_lm]}
    for field in FIELDS:
        value = next((native_value(params, n) for n in reversed(field.native) if native_value(params, n)), None)
        if field.experts and not row.experts:
            continue
        config[field.name] = value
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(config.pop("rope_theta") or DEFAULT_ROPE_THETA)}
    default_max = DEFAULT_MAX_POSITION_EMBEDDINGS
    if yarn:
        rope["rope_type"] = "yarn"
        for native, name in YARN_PARAMS.items():
            rope[name] = int(yarn[native]) if name == "original_max_position_embeddings" else float(yarn[native])
        rope.update(mscale=1.0, mscale_all_dim=1.0)  # apply_scale false: no attention magnitude correction
        if scaling:
            rope["llama_4_scaling_beta"] = float(scaling["beta"])
        default_max = int(rope["factor"] * rope["original_max_position_embeddings"])
    config["rope_parameters"] = rope
    if per_layer:
        pattern = per_layer * (config["num_hidden_layers"] // len(per_layer))
        config["sliding_window"] = next(size for size in per_layer if size is not None)
        config["layer_types"] = ["full_attention" if size is None else "sliding_attention" for size in pattern]
        config["head_dim"] = head_dim(config)  # transformers' MinistralConfig leaves it unset
    config["max_position_embeddings"] = config["max_position_embeddings"] or default_max
    config["tie_word_embeddings"] = bool(config["tie_word_embeddings"])
    return config


def yarn_params(rope: Mapping[str, Any], error: type[Exception]) -> dict[str, Any]:
    """transformers' YaRN `rope_parameters` as params.json's `yarn`, when they map exactly."""
    unknown = sorted(set(rope) - _YARN_CONFIG_KEYS)
    factor = rope.get("factor")
    attention_factor = rope.get("attention_factor")
    mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
    unscaled = attention_factor == 1.0 or (attention_factor is None and mscale and mscale == mscale_all_dim)
    if unknown or not factor or not rope.get("original_max_position_embeddings") or not unscaled:
        raise error(
            f"YaRN parameters {dict(rope)} have no exact params.json equivalent (Mistral's `yarn` has factor, "
            "original_max_position_embeddings, beta_fast/beta_slow and no attention magnitude correction)."
        )
    if rope.get("truncate", True) is not True:
        raise error("YaRN with truncate=False has no params.json equivalent.")
    return {
        "factor": factor,
        "original_max_position_embeddings": rope["original_max_position_embeddings"],
        "beta": rope.get("beta_fast") or 32.0,  # transformers' defaults
        "alpha": rope.get("beta_slow") or 1.0,
        "apply_scale": False,
    }


def _latent_params(config: Mapping[str, Any], error: type[Exception]) -> dict[str, Any]:
    """A transformers mistral4 config dict as the params.json `_latent_config` reads back into it."""
    rope = config.get("rope_parameters") or {}
    nope, rotary = config.get("qk_nope_head_dim") or 0, config.get("qk_rope_head_dim") or 0
    fraction = rotary / (nope + rotary) if nope + rotary else None
    checks = {
        "rope_type yarn": rope.get("rope_type", rope.get("type")) == "yarn",
        "llama_4_scaling_beta": rope.get("llama_4_scaling_beta") is not None,
        "partial_rotary_factor = qk_rope_head_dim / (qk_nope_head_dim + qk_rope_head_dim)": (
            rope.get("partial_rotary_factor", fraction) == fraction
        ),
        "mscale = mscale_all_dim = 1": rope.get("mscale") == rope.get("mscale_all_dim") == 1.0,
        "rope_interleave": config.get("rope_interleave", True) is True,
        "norm_topk_prob": config.get("norm_topk_prob", True) is True,
        "no attention bias": not config.get("attention_bias"),
        "silu": config.get("hidden_act", "silu") == "silu",
        "no sliding window": config.get("sliding_window") is None,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise error(
            f"This mistral4 config has no exact params.json equivalent (it needs {'; '.join(failed)}); keep the "
            "Hugging Face checkpoint."
        )
    yarn = yarn_params({key: value for key, value in rope.items() if key != "partial_rotary_factor"}, error)
    params: dict[str, Any] = {}
    for field in FIELDS:
        value = config.get(field.name)
        if field.experts or value is None or field.name in ("head_dim", "sliding_window") or field.kind == FLAG:
            continue
        for name in field.native:
            params[name] = value
    params["head_dim"] = nope + rotary  # required by mistral-inference; transformers' mistral4 head_dim too
    params["rope_theta"] = rope.get("rope_theta", DEFAULT_ROPE_THETA)
    if config.get("tie_word_embeddings"):
        params["tied_embeddings"] = True
    for name in LATENT_PARAMS:
        if config.get(name) is not None:
            params[name] = config[name]
    params["moe"] = {key: config.get(name, default) for key, (name, default) in DEEPSEEK_MOE_PARAMS.items()}
    params["moe"]["num_experts"] = config.get("n_routed_experts") or config.get("num_local_experts")
    params["yarn"] = yarn
    params["llama_4_scaling"] = {
        "original_max_position_embeddings": yarn["original_max_position_embeddings"],
        "beta": rope["llama_4_scaling_beta"],
    }
    return params


def params_from_config(config: Mapping[str, Any], error: type[Exception] = ValueError) -> dict[str, Any]:
    """A transformers config dict (`as_config_dict`) of a mistral, mixtral, ministral, ministral3 or mistral4 causal
    LM as a native `params.json` dict; anything without an exact params.json spelling raises `error`."""
    row = find_architecture(config.get("model_type"))
    if row is not None and row.model_type == "mistral4":
        return _latent_params(config, error)
    if row is not None and (row.latent_attention or row.vision):
        raise error(
            f"model_type {config['model_type']!r} does not convert to Mistral's native layout with the kit (it writes "
            "the text models mistral, mixtral, ministral, ministral3 and mistral4); keep the Hugging Face checkpoint, "
            "or save it with transformers (mistral_large4's save_pretrained writes the native layout)."
        )
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    extra: dict[str, Any] = {}
    if rope_type == "yarn":
        extra["yarn"] = yarn_params(rope, error)
    elif rope_type != "default" or set(rope) - {"rope_type", "type", "rope_theta", "llama_4_scaling_beta"}:
        raise error(f"rope_parameters {dict(rope)} have no params.json equivalent; only default RoPE and YaRN convert.")
    if row is not None and row.model_type == "ministral3":
        if "yarn" not in extra or rope.get("llama_4_scaling_beta") is None:
            raise error("A ministral3 config converts to params.json only with YaRN and llama_4_scaling_beta.")
        extra["llama_4_scaling"] = {
            "original_max_position_embeddings": extra["yarn"]["original_max_position_embeddings"],
            "beta": rope["llama_4_scaling_beta"],
        }
    layer_types = config.get("layer_types") if row is not None and row.model_type == "ministral" else None
    if layer_types and config.get("sliding_window") is not None:
        if set(layer_types) - {"sliding_attention", "full_attention"}:
            raise error(f"layer_types {layer_types[:4]}... have no params.json equivalent.")
        extra["sliding_window"] = [
            config["sliding_window"] if kind == "sliding_attention" else None for kind in layer_types
        ]
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
    params.update(extra)
    return params


def as_config_dict(config: Any) -> dict[str, Any]:
    """A transformers config (or config dict) as a dict whose `head_dim` is set (transformers computes it)."""
    if isinstance(config, Mapping):
        return dict(config)
    return {**config.to_dict(), "head_dim": getattr(config, "head_dim", None)}


def head_dim(config: Mapping[str, Any]) -> int:
    """The attention head size of a config dict: `head_dim`, else hidden size / heads (transformers' default)."""
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
