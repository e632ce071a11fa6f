"""How much a Mistral mixture of experts shrinks in 4-bit and 8-bit: memory footprint as a ratio to float32.

For each model: the kit's `tiny_model` as the demo builds it, where the unquantized embeddings and output head (a
32,000-token vocabulary at hidden size 64) are most of the weights, and a tiny model shaped like the real ones, where
the experts are (Mixtral 8x7B: 96% of its parameters). Each is loaded in float32, then with bitsandbytes 4-bit (NF4)
and 8-bit (LLM.int8) configs, through the kit (`kit.AutoModelForCausalLM`, experts as one linear layer each) and
through plain transformers (fused 3-D experts, which bitsandbytes leaves unquantized: bitsandbytes#1849). The ratio
is `get_memory_footprint()` over the float32 model's, on the CPU; runs in about a minute.

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

# Name -> (tiny_model kind, config overrides). "shaped like the real ones": a small vocabulary, experts 8x wider than
# the hidden size (Mixtral 8x7B: 14336 / 4096 = 3.5x per expert, 8 experts).
MODELS = {
    "mixtral, tiny_model() as built": ("mixtral", {}),
    "mixtral, experts dominate": ("mixtral", {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 1024}),
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


def main() -> None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    columns = f"{'kit 4bit':>8} {'kit 8bit':>8}  {'plain 4bit':>10} {'plain 8bit':>10}"
    print(f"{'model':34} {'experts':>8} {'fp32 MB':>8}  {columns}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (kind, overrides) in MODELS.items():
            path = kit.tiny_model(kind, path=Path(scratch) / name.replace(" ", "-").replace(",", ""), **overrides)
            full = footprint(kit.AutoModelForCausalLM, path, None)
            kit_ratios = [footprint(kit.AutoModelForCausalLM, path, q) / full for q in QUANTIZATION.values()]
            plain = [footprint(transformers.AutoModelForCausalLM, path, q) / full for q in QUANTIZATION.values()]
            print(
                f"{name:34} {expert_share(path):>7.0%} {full / 1e6:>8.1f}  "
                + " ".join(f"{ratio:>7.2f}x" for ratio in kit_ratios)
                + "  "
                + " ".join(f"{ratio:>9.2f}x" for ratio in plain)
            )


if __name__ == "__main__":
    main()
