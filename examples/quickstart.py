"""Quickstart: the Mistral-7B-Instruct-v0.2 model-card snippet, with the kit.

The card loads with `transformers.AutoModelForCausalLM`, moves the model to "cuda" by hand and generates from the
chat template. With the kit the same lines take a preset (dtype, quantization, attention and device chosen for this
machine, with notes saying why), accept Mistral's native checkpoints too, and the template is Mistral's exact one.

    python examples/quickstart.py                      # a tiny random Mistral built locally: offline, seconds
    python examples/quickstart.py --model mistralai/Mistral-7B-Instruct-v0.2 --preset 4bit
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import hf_mistral_kit as kit
from hf_mistral_kit import AutoModelForCausalLM, AutoTokenizer

# The conversation of the model card.
MESSAGES = [
    {"role": "user", "content": "What is your favourite condiment?"},
    {
        "role": "assistant",
        "content": "Well, I'm quite partial to a good squeeze of fresh lemon juice. It adds just the right amount of "
        "zesty flavour to whatever I'm cooking up in the kitchen!",
    },
    {"role": "user", "content": "Do you have mayonnaise recipes?"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or hub id (default: a tiny random Mistral)")
    parser.add_argument("--preset", default="auto", help="loading preset: auto, bf16, fp16, 4bit, 8bit, ... (auto)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    if args.model is None:
        print("No --model: using a tiny Mistral with RANDOM weights, so the reply is noise.")
    scratch = tempfile.TemporaryDirectory()  # holds the tiny model, if any; removed when the script ends
    path = args.model or kit.tiny_model("mistral", path=Path(scratch.name) / "tiny-mistral")

    # As on the card, but with a preset instead of `model.to("cuda")`: the kit says what it chose and why.
    resolved = kit.resolve_preset(args.preset, model=path)
    for note in resolved.notes:
        print(f"preset: {note}")
    model = AutoModelForCausalLM.from_pretrained(path, preset=args.preset)
    tokenizer = AutoTokenizer.from_pretrained(path)

    encodeds = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    model_inputs = encodeds.to(model.device)
    torch.manual_seed(0)
    generated_ids = model.generate(**model_inputs, max_new_tokens=args.max_new_tokens, do_sample=True)
    decoded = tokenizer.batch_decode(generated_ids)
    print(decoded[0])


if __name__ == "__main__":
    main()
