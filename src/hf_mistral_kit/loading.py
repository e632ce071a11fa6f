"""`load_model`: a Mistral checkpoint loaded with a preset, plus a tokenizer ready for batched generation.

What it fixes over a bare `from_pretrained` + `AutoTokenizer`:
- the preset's dtype/quantization/attention/placement, resolved against the hardware (see `planning.presets`);
- a pad token that is not EOS: Mistral's tokenizers have none, and the usual `pad_token = eos_token` makes
  fine-tuning mask every EOS label, so the model never learns to stop. A dedicated `<pad>` is used where the
  vocabulary has one, else `<unk>` (id 0), which Mistral's byte-fallback tokenizers never produce from text;
- `padding_side="left"` so batched generation continues each prompt from its last token (flash_attention_2
  refuses right padding there); `prepare_for_training=True` switches to right padding, as trainers expect;
- the tokenizer's exact Mistral chat template (`load_tokenizer`), and a generation config that knows the pad
  token, stops at the template's end-of-turn token and does not stop at transformers' 20-token default.

`lora_config` gives the LoRA settings that reach every linear layer of the model as loaded (Mixtral's experts
included, in whichever layout the preset built them).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .formats import names
from .formats.dispatch import find_checkpoint
from .formats.gguf import load_gguf_tokenizer
from .hub import TOKENIZER_AND_CONFIG_FILES
from .planning.hardware import Hardware
from .planning.presets import Preset, resolve_preset
from .tokenizers.loading import load_tokenizer

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["load_model", "lora_config"]

logger = logging.getLogger(__name__)

# Used when a checkpoint's generation config sets no length at all (transformers would stop at 20 tokens).
DEFAULT_MAX_NEW_TOKENS = 512

# Turn-closing tokens a chat template may use instead of EOS.
END_OF_TURN_TOKENS = ("<|im_end|>",)

# LoRA dropout as in QLoRA (Dettmers et al. 2023, for 7B-13B models): `lora_config`'s default where targets take it.
QLORA_DROPOUT = 0.05

# Non-reentrant checkpointing: the reentrant default is deprecated in torch and needs inputs that require grad.
_CHECKPOINTING_KWARGS = {"use_reentrant": False}


def load_model(
    name_or_path: str | os.PathLike,
    preset: str | Preset = "auto",
    *,
    hardware: Hardware | None = None,
    context_length: int | None = None,
    prepare_for_training: bool = False,
    **overrides: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer with a preset ("auto", "bf16", "fp16", "4bit", "8bit", "fa2", "sdpa", "cpu").

    Keyword `overrides` go to `from_pretrained` and win over the preset (e.g. `device_map="auto"`, which also
    skips the preset's fit check). `context_length` is what memory is planned for (default:
    `planning.DEFAULT_CONTEXT_LENGTH`, or the model's window if shorter).
    `prepare_for_training=True` readies the model for (Q)LoRA: with a 4-bit/8-bit preset it runs peft's
    `prepare_model_for_kbit_training` (frozen base, fp32 norms/embeddings), otherwise it enables input gradients;
    either way gradient checkpointing is on, the cache off and padding on the right. `lora_config(model)` then gives
    the LoRA targets of the model as loaded.
    The preset's notes are logged at INFO level by `hf_mistral_kit.loading`.

    GGUF files (llama.cpp's format) load too: `load_model(directory_or_hub_id, gguf_file="model.Q8_0.gguf")`, as
    with transformers, or `load_model("path/to/model.gguf")`. Mixtral comes back with its experts, quantized files
    dequantized (to float32, or to `dtype=` if passed), and the tokenizer is the exact kit tokenizer rebuilt from the
    file's vocabulary.
    """
    source = find_checkpoint(name_or_path, overrides)
    gguf_path = source.path if source is not None and source.layout == "gguf" else None
    if gguf_path is not None:
        overrides = {key: value for key, value in overrides.items() if key != "gguf_file"}
        local_dir, model_description = None, source.config_dict()
    else:
        local_dir = model_description = _local_dir(name_or_path)
    resolved = resolve_preset(
        preset,
        hardware,
        model=model_description,
        context_length=context_length,
        check_fit="device_map" not in overrides,
    )
    for note in resolved.notes:
        logger.info("%s: %s", Path(gguf_path or name_or_path).name, note)
    kwargs = {**resolved.kwargs, **overrides}
    if "device_map" in overrides and "max_memory" not in overrides:
        kwargs.pop("max_memory", None)

    model = _model_class().from_pretrained(gguf_path or name_or_path, **kwargs)
    tokenizer = load_gguf_tokenizer(gguf_path) if gguf_path else load_tokenizer(local_dir)

    set_pad_token(tokenizer, model)
    tokenizer.padding_side = "right" if prepare_for_training else "left"
    _configure_generation(model, tokenizer)
    if prepare_for_training:
        _prepare_for_training(model)
    return model, tokenizer


def _model_class():
    """The one place that names the model class: the kit's drop-in (native checkpoints, quantizable Mixtral)."""
    from .auto import AutoModelForCausalLM

    return AutoModelForCausalLM


def _local_dir(name_or_path: str | os.PathLike) -> Path:
    """A local directory with the checkpoint's config and tokenizer files (Hub ids fetch just those)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), allow_patterns=list(TOKENIZER_AND_CONFIG_FILES)))


def set_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> str:
    """Give `tokenizer` a pad token that is not EOS (see the module docstring) and tell `model`'s config.

    Keeps an existing non-EOS pad token; else uses `<pad>`/`[PAD]` if in the vocabulary, else `<unk>`; only a
    vocabulary with none of these gets a new `<pad>` token, and then `model`'s embeddings are resized.
    Returns the pad token.
    """
    eos_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == eos_id:
        vocab = tokenizer.get_vocab()
        candidates = [token for token in ("<pad>", "[PAD]") if token in vocab]
        if tokenizer.unk_token is not None:
            candidates.append(tokenizer.unk_token)
        usable = [token for token in candidates if tokenizer.convert_tokens_to_ids(token) != eos_id]
        if usable:
            tokenizer.pad_token = usable[0]
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token


def _configure_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    config = model.generation_config
    config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    stop_ids = [tokenizer.eos_token_id, *end_of_turn_ids(tokenizer)]
    config.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    if config.max_length is None and config.max_new_tokens is None:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the turn-closing tokens other than EOS that the tokenizer's chat template writes (ChatML's)."""
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in END_OF_TURN_TOKENS if token in template and token in vocab]


def lora_config(model: PreTrainedModel, **kwargs: Any) -> LoraConfig:
    """A peft `LoraConfig` whose targets are the linear layers of `model`'s decoder layers, as loaded.

    `kwargs` go to `LoraConfig` (`r`, `lora_alpha`, `lora_dropout`, `task_type`, ...); `lora_dropout` defaults to
    QLoRA's 0.05, or to 0 where experts are fused (see below). Unless given, the targets are
    the attention and MLP projections the model really has, from the kit's tensor table (`formats.names`): Mistral's
    `q/k/v/o_proj` and `gate/up/down_proj`; Mixtral's `q/k/v/o_proj` and its experts, which are per-expert linear
    layers `w1/w2/w3` under a 4-bit/8-bit preset and two fused 3-D parameters otherwise (`mlp.experts.gate_up_proj`,
    `mlp.experts.down_proj`: `target_parameters`, peft >= 0.17, which takes no `lora_dropout`). The routers
    (`mlp.gate`) and the embeddings/output head are not targets, as in the usual (Q)LoRA recipes. Multi-head latent
    attention's projections (`q_a_proj`, `q_b_proj`, `kv_a_proj_with_mqa`, `kv_b_proj`, `o_proj`) and shared experts
    are targets; the Large line's attention indexer is not, and neither is the vision tower or projector of a
    vision-language model (`exclude_modules`).

    Given `target_modules`/`target_parameters` are kept, with a warning naming each entry that matches nothing in
    `model` (peft itself only refuses a list where nothing matches) and the names that exist, and one when the model's
    fused experts get no adapter (`target_modules="all-linear"` reaches linear layers only).
    """
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ImportError("lora_config needs peft: pip install 'hf-mistral-kit[peft]'.") from error

    linear = _linear_layer_names(model)
    fused = _fused_expert_parameters(model)
    vision = _vision_modules(model)
    if vision and "exclude_modules" not in kwargs and "exclude_modules" in LoraConfig.__dataclass_fields__:
        kwargs["exclude_modules"] = vision  # the vision tower's projections share the decoder's names
    if "target_modules" in kwargs or "target_parameters" in kwargs:
        _warn_unmatched(model, kwargs.get("target_modules"), kwargs.get("target_parameters"), linear + fused)
        if fused and not kwargs.get("target_parameters"):
            warnings.warn(
                f"this {type(model).__name__} keeps its experts fused ({', '.join(fused)}): no target_modules entry "
                f"reaches them, so the experts get no adapter. Add target_parameters={fused} (and lora_dropout=0), "
                "or omit target_modules to target them all.",
                UserWarning,
                stacklevel=2,
            )
        return LoraConfig(**kwargs)
    kwargs.setdefault("lora_dropout", 0.0 if fused else QLORA_DROPOUT)
    if fused:
        if "target_parameters" not in LoraConfig.__dataclass_fields__:
            raise ImportError(
                f"{type(model).__name__} keeps its experts fused ({', '.join(fused)}), which LoRA reaches through "
                "peft's `target_parameters` (peft >= 0.17): pip install -U peft, or load with preset '4bit'/'8bit' "
                "(experts as per-expert linear layers)."
            )
        if kwargs.get("lora_dropout"):
            raise ValueError(
                f"lora_dropout={kwargs['lora_dropout']}: {type(model).__name__} keeps its experts fused "
                f"({', '.join(fused)}), and peft's LoRA on parameters takes no dropout. Pass lora_dropout=0, or load "
                "with preset '4bit'/'8bit' (experts as per-expert linear layers, which take dropout)."
            )
        kwargs["target_parameters"] = fused
    return LoraConfig(target_modules=linear, **kwargs)


def _linear_layer_names(model: PreTrainedModel) -> list[str]:
    """The table's decoder-layer linear modules (`names.LINEAR_ROLES`) that `model` has as linear layers (outside a
    vision tower and projector, whose projections share some of the names)."""
    from torch import nn

    vision = _vision_modules(model)
    present = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not (vision and re.fullmatch(vision, name))
    }
    table = (
        row.hf.removesuffix(".weight").rsplit(".", 1)[-1] for row in names.TENSORS if row.role in names.LINEAR_ROLES
    )
    return [name for name in dict.fromkeys(table) if name in present]


def _vision_modules(model: PreTrainedModel) -> str | None:
    """A regular expression (peft's `exclude_modules`) matching the vision tower and projector of a vision-language
    model (the whole `mistral3`/`mistral_large4` model), None for a text model."""
    from .modeling.quantization import VISION_MODULES

    if not any(re.match(pattern, name) for name, _ in model.named_modules() for pattern in VISION_MODULES):
        return None
    return rf"(?:{'|'.join(VISION_MODULES)})\..*"


def _fused_expert_parameters(model: PreTrainedModel) -> list[str]:
    """The transformers 5.x fused expert parameters (`mlp.experts.gate_up_proj`, ...) that `model` has."""
    fused = dict.fromkeys(row.hf_fused.split("{layer}.", 1)[1] for row in names.TENSORS if row.hf_fused)
    present = [name for name, _ in model.named_parameters()]
    return [suffix for suffix in fused if any(name.endswith("." + suffix) for name in present)]


def _warn_unmatched(model: PreTrainedModel, modules: Any, parameters: Any, targets: list[str]) -> None:
    def unmatched(requested: Any, names_in_model: list[str]) -> list[str]:
        if requested is None or isinstance(requested, str):  # a regex or "all-linear": peft checks it
            return []
        return [key for key in requested if not any(n == key or n.endswith("." + key) for n in names_in_model)]

    missing = unmatched(modules, [name for name, _ in model.named_modules()])
    missing += unmatched(parameters, [name for name, _ in model.named_parameters()])
    if missing:
        warnings.warn(
            f"LoRA targets {missing} match nothing in this {type(model).__name__}, so they get no adapter. Its "
            f"decoder layers' projections are {targets}; omit target_modules/target_parameters to target them all.",
            UserWarning,
            stacklevel=3,
        )


def _prepare_for_training(model: PreTrainedModel) -> None:
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        try:
            from peft import prepare_model_for_kbit_training
        except ImportError as error:
            raise ImportError(
                "prepare_for_training=True with a quantized preset needs peft: pip install 'hf-mistral-kit[peft]'."
            ) from error
        # peft freezes the base and casts what is not quantized to float32; checkpointing is enabled below, since
        # peft would call the name transformers deprecates (`gradient_checkpointing_enable`, a FutureWarning).
        # Non-reentrant checkpointing needs no input gradients, so peft would not enable them either.
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        _enable_checkpointing(model)
    else:
        _enable_checkpointing(model)
        model.enable_input_require_grads()
    model.config.use_cache = False


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # `activation_checkpointing_enable` is the 5.x name; older 5.x releases only have the deprecated one.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(_CHECKPOINTING_KWARGS)
