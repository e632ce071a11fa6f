"""How much each Mistral mixture of experts shrinks in 4-bit and 8-bit: memory footprint as a ratio to float32.

For each MoE architecture of the family (Mixtral; Mistral Small 4's `mistral4`; the Large line's `mistral_large4`,
where the installed transformers has it): the kit's `tiny_model` as built, where the unquantized embeddings and
output head (a vocabulary of 32,000 or 131,072 tokens at hidden size 64) are most of the weights, and a tiny model
shaped like the real ones, where the experts are (Mixtral 8x7B: 96% of its parameters; Mistral Small 4: 97%; the
Large line: 98%). Each is loaded in float32, then with bitsandbytes 4-bit (NF4) and 8-bit (LLM.int8) configs,
through the kit (`kit.AutoModelForCausalLM`, experts as one linear layer each) and through plain transformers (its
class for the architecture, with fused 3-D experts, which bitsandbytes leaves unquantized: bitsandbytes#1849). The
ratio is `get_memory_footprint()` over the float32 model's, on the CPU; runs in a few minutes.

    python benchmarks/moe_sizes.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
import transformers
from transformers import BitsAndBytesConfig

import hf_mistral_kit as kit
from hf_mistral_kit.architectures import find_architecture

# Name -> (tiny_model kind, config overrides). "shaped like the real ones": a small vocabulary, experts 8x wider than
# the hidden size (Mixtral 8x7B: 14336 / 4096 = 3.5x per expert, 8 experts), MLA's ranks as in the tiny models.
_DOMINANT = {"vocab_size": 512, "hidden_size": 128}
MODELS = {
    "mixtral, tiny_model() as built": ("mixtral", {}),
    "mixtral, experts dominate": ("mixtral", {**_DOMINANT, "intermediate_size": 1024}),
    "mistral4, tiny_model() as built": ("mistral4", {}),
    "mistral4, experts dominate": ("mistral4", {**_DOMINANT, "moe_intermediate_size": 1024, "n_routed_experts": 8}),
    "mistral_large4, tiny_model() as built": ("mistral_large4", {}),
    "mistral_large4, experts dominate": (
        "mistral_large4",
        {**_DOMINANT, "moe_intermediate_size": 1024, "n_routed_experts": 8},
    ),
}
QUANTIZATION = {
    "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    "8bit": BitsAndBytesConfig(load_in_8bit=True),
}


def footprint(loader, path: Path, quantization: BitsAndBytesConfig | None) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = loader.from_pretrained(path, dtype=torch.float32, quantization_config=quantization)
    return model.get_memory_footprint()


def expert_share(path: Path) -> float:
    model = kit.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return experts / total


def plain_class(kind: str):
    """transformers' own class for a kind: the one its config.json names."""
    return getattr(transformers, find_architecture(kind).causal_lm)


def installed(kind: str) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return kind in CONFIG_MAPPING_NAMES


def main() -> None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    columns = f"{'kit 4bit':>8} {'kit 8bit':>8}  {'plain 4bit':>10} {'plain 8bit':>10}"
    print(f"{'model':38} {'experts':>8} {'fp32 MB':>8}  {columns}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (kind, overrides) in MODELS.items():
            if not installed(kind):
                print(f"{name:38} (transformers {transformers.__version__} has no {kind})")
                continue
            path = kit.tiny_model(kind, path=Path(scratch) / name.replace(" ", "-").replace(",", ""), **overrides)
            full = footprint(kit.AutoModelForCausalLM, path, None)
            kit_ratios = [footprint(kit.AutoModelForCausalLM, path, q) / full for q in QUANTIZATION.values()]
            plain = [footprint(plain_class(kind), path, q) / full for q in QUANTIZATION.values()]
            print(
                f"{name:38} {expert_share(path):>7.0%} {full / 1e6:>8.1f}  "
                + " ".join(f"{ratio:>7.2f}x" for ratio in kit_ratios)
                + "  "
                + " ".join(f"{ratio:>9.2f}x" for ratio in plain)
            )


if __name__ == "__main__":
    main()
