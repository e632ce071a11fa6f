"""What every checkpoint reader of the kit is: a validated source of a transformers config and lazily read weights.

`Checkpoint` is the interface the native reader (`native.NativeCheckpoint`), the GGUF reader (`gguf.GGUFCheckpoint`)
and the Hugging Face reader used by conversions (`huggingface.HFCheckpoint`) implement. `hf_tensors_from_native`
and `check_loading_info` are the checks they share: every key and shape against the config before anything is read,
and transformers' loading report after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from . import names
from .errors import NativeCheckpointError
from .tensors import LazyTensor, RotaryToHF


class Checkpoint:
    """A validated checkpoint: `config` (a transformers config dict), `native_tensors` (its weights under Mistral's
    native names, read when first indexed) and what loading it through transformers needs.

    Opening one reads metadata and file headers only, and checks every key and shape. Use it as a context manager (or
    call `close()`) to release what it holds open.
    """

    error: ClassVar[type[Exception]] = NativeCheckpointError
    source: Path
    described_by: str  # what describes the model in errors: params.json, the GGUF metadata, config.json
    config: dict[str, Any]
    native_tensors: dict[str, LazyTensor]
    hf_tensors: dict[str, LazyTensor]  # checked against the config when the checkpoint is opened

    def check_tensors(self, display: Callable[[str], str] = str, described_by: Any = None) -> None:
        """Check every native tensor against the config and keep them under transformers names (`hf_tensors`)."""
        self.hf_tensors = hf_tensors_from_native(
            self.native_tensors, self.config, self.source, described_by or self.described_by, self.error, display
        )

    def hf_state_dict(self) -> dict[str, LazyTensor]:
        """Weights under transformers names (Mixtral experts per expert, 4.x names; Mistral 4's per expert, the kit's
        `mlp.experts.N.w1`), read when first indexed."""
        return dict(self.hf_tensors)

    def check_loading_info(self, loading_info: Mapping[str, Any], model: Any) -> None:
        check_loading_info(loading_info, model, self.source, self.described_by, self.error)

    def apply_generation_config(self, model: Any) -> None:
        """Generation defaults the checkpoint carries (none by default)."""

    def close(self) -> None:
        """Release what the checkpoint holds open (nothing by default)."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def listed(items: list[str], shown: int = 5) -> str:
    text = ", ".join(map(repr, items[:shown]))
    return text if len(items) <= shown else f"{text} ... ({len(items)} in all)"


def experts_note(config: Mapping[str, Any]) -> str:
    return f" of {names.experts_count(config)} experts" if names.has_experts(config) else ""


def hf_tensors_from_native(
    native: Mapping[str, LazyTensor],
    config: Mapping[str, Any],
    source: Any,
    described_by: Any,
    error: type[Exception] = NativeCheckpointError,
    display: Callable[[str], str] = str,
) -> dict[str, LazyTensor]:
    """Native-named tensors under transformers names, `wq`/`wk` reordered to the rotate-half layout (lazily).

    Every key and shape is checked against `config` (a transformers config dict, as `config_dict_from_params`
    gives) first: unknown, extra and missing weights and wrong shapes raise `error` naming the weight
    (as `display(native_key)` spells it), `source` and what `described_by` should say. Mixtral experts keep their 4.x
    per-expert names (`block_sparse_moe.experts.E.w1.weight`).
    """
    count = names.weight_count(config)
    # The table below has one entry per expected weight: bound it by what the checkpoint holds before building it.
    if count > len(native) + 16:
        raise error(
            f"{described_by} describes a model of {count} weights ({config['num_hidden_layers']} layers"
            f"{experts_note(config)}), but {source} holds {len(native)}: check the number of layers and experts "
            "there, or re-download the checkpoint."
        )
    expected = names.expected_hf_shapes(config)
    unknown = [display(key) for key in native if names.find(key, "native", config) is None]
    if unknown:
        raise error(
            f"{source}: unknown weight name(s) {listed(unknown)} for the {config.get('model_type')} model "
            f"{described_by} describes. Mistral native weights are tok_embeddings, norm, output and "
            "layers.N.{attention.wq/wk/wv/wo (latent attention: wq_a/wq_b/wkv_a_with_mqa/wkv_b/wo), attention_norm, "
            "ffn_norm, feed_forward.w1/w2/w3 or the experts}; vision weights belong to a params.json with "
            "`vision_encoder` (the text model is loaded), LoRA adapters are not supported."
        )
    hf_tensors = {}
    for key, tensor in native.items():
        found = names.find(key, "native", config)
        hf_key = found.name("hf")
        if hf_key not in expected:
            raise error(
                f"{source}: weight {display(key)!r} does not fit the model {described_by} describes (check the "
                "number of layers and experts and whether embeddings are tied there)."
            )
        if tensor.shape != expected[hf_key]:
            raise error(
                f"{source}: weight {display(key)!r} has shape {list(tensor.shape)}, but {described_by} implies "
                f"{list(expected[hf_key])}: check dim, head_dim, hidden_dim, n_heads, n_kv_heads and vocab_size."
            )
        heads = config[found.row.rotary] if found.row.rotary else None
        hf_tensors[hf_key] = tensor if heads is None else tensor.with_transform(RotaryToHF(heads))
    missing = [display(names.rename(key, "hf", "native", config)) for key in expected if key not in hf_tensors]
    if missing:
        raise error(
            f"{source}: missing weight(s) {listed(missing)} that {described_by} implies; the checkpoint is "
            "incomplete (re-download it) or its description belongs to another model."
        )
    return hf_tensors


def check_loading_info(
    loading_info: Mapping[str, Any],
    model: Any,
    source: Any,
    described_by: Any,
    error: type[Exception] = NativeCheckpointError,
) -> None:
    """Raise unless transformers filled every weight of `model` that the checkpoint `source` has.

    A task head the checkpoint has no weights for (e.g. `score` of a sequence classifier) stays freshly initialised,
    and a base model drops `output.weight`, as with Hugging Face checkpoints.
    """
    prefix = model.base_model_prefix + "."
    is_base_model = not hasattr(model, model.base_model_prefix)
    problems = {
        "missing": sorted(
            key
            for key in loading_info.get("missing_keys", ())
            if is_base_model or key.startswith(prefix) or key == "lm_head.weight"
        ),
        "unexpected": sorted(
            key
            for key in loading_info.get("unexpected_keys", ())
            if key != "lm_head.weight" or hasattr(model, "lm_head")
        ),
        "mismatched": sorted(str(item) for item in loading_info.get("mismatched_keys", ())),
        "not converted": sorted(loading_info.get("conversion_errors", {}) or ()),
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{kind}: {', '.join(keys[:5])}" for kind, keys in problems.items())
        raise error(
            f"Loading {source} did not fill the model ({details}). The model config passed to from_pretrained must "
            f"match {described_by}."
        )
