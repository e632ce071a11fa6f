"""QLoRA fine-tuning of a Mistral or Mixtral model: 4-bit NF4 base, LoRA adapters, loss on the assistant's tokens only.

The settings are QLoRA's (as in the fine-tuning part of ../shared seed 003): NF4 with double quantization and a
bf16 compute dtype where the hardware has it (preset "4bit"), LoRA on the attention and MLP projections of every
decoder layer: `kit.lora_config` names them as the model was loaded (Mistral's `gate/up/down_proj`, each Mixtral
expert's `w1/w2/w3`). The training data are chats rendered by the model's own chat template;
`return_assistant_tokens_mask` marks which tokens the assistant wrote, and only those carry a loss (the prompt is
context, not a target).

    python examples/qlora_finetune.py                     # a tiny random Mistral, a few steps on the CPU
    python examples/qlora_finetune.py --model mistralai/Mistral-7B-Instruct-v0.2 --steps 200 --output adapter/
    python examples/qlora_finetune.py --model mistralai/Mixtral-8x7B-Instruct-v0.1 --steps 200 --output adapter/
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

import hf_mistral_kit as kit

IGNORE_INDEX = -100  # labels with this value carry no loss (torch.nn.CrossEntropyLoss's ignore_index)

# The use case of seed 003: turn a few words into a detailed image-generation prompt.
EXAMPLES = [
    ("A computer with an emotional chip", "A lonely vintage computer glowing amber, a tiny heart-shaped chip pulsing."),
    (
        "A rainbow chasing its colors",
        "A playful rainbow sprinting across a pastel sky, its colors trailing like ribbons.",
    ),
    ("A lighthouse on the moon", "A silver lighthouse on a grey lunar crater, its beam sweeping over a blue Earth."),
    ("A library under the sea", "Coral-covered bookshelves in a sunken hall, fish drifting past glowing pages."),
]


def conversations() -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "user", "content": f"Generate a midjourney prompt in less than 20 words for {subject}"},
            {"role": "assistant", "content": prompt},
        ]
        for subject, prompt in EXAMPLES
    ]


def build_batch(tokenizer: Any, chats: list[list[dict[str, str]]]) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels: the labels are the ids where the assistant speaks, IGNORE_INDEX elsewhere
    (padding included). Padded on the right, as for training."""
    rows = [tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True) for chat in chats]
    width = max(len(row["input_ids"]) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in rows:
        ids, mask = list(row["input_ids"]), list(row["assistant_masks"])
        fill = width - len(ids)
        batch["input_ids"].append(ids + [pad] * fill)
        batch["attention_mask"].append([1] * len(ids) + [0] * fill)
        batch["labels"].append(
            [i if m else IGNORE_INDEX for i, m in zip(ids, mask, strict=True)] + [IGNORE_INDEX] * fill
        )
    return {key: torch.tensor(value) for key, value in batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="checkpoint directory or hub id (default: a tiny random Mistral)")
    which.add_argument("--tiny", choices=["mistral", "mixtral"], default="mistral", help="the tiny model's kind")
    parser.add_argument("--preset", default="4bit", help="loading preset (default: 4bit, i.e. QLoRA)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--dropout",
        type=float,
        help="LoRA dropout (default: lora_config's, 0.05, or 0 for a Mixtral loaded unquantized: fused experts)",
    )
    parser.add_argument("--output", help="directory to save the LoRA adapter to")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()  # holds the tiny model, if any; removed when the script ends
    path = args.model or kit.tiny_model(args.tiny, path=Path(scratch.name) / f"tiny-{args.tiny}")

    # prepare_for_training: peft's prepare_model_for_kbit_training (frozen 4-bit base, fp32 norms, gradient
    # checkpointing), no KV cache, right padding.
    model, tokenizer = kit.load_model(path, preset=args.preset, prepare_for_training=True)
    # LoRA on every linear layer of the decoder layers, under the names this model has (not the routers).
    lora = kit.lora_config(
        model,
        r=args.rank,
        lora_alpha=2 * args.rank,
        task_type="CAUSAL_LM",
        **({} if args.dropout is None else {"lora_dropout": args.dropout}),
    )
    fused = getattr(lora, "target_parameters", None)  # a Mixtral loaded unquantized: its fused experts
    print(f"LoRA targets: {sorted(lora.target_modules)}" + (f" and parameters {fused}" if fused else ""))
    # Imported after the kit (sorted imports would put it first): bitsandbytes, which peft imports, then logs its
    # optional-kernel warning as the kit's note (see hf_mistral_kit.quiet).
    from peft import get_peft_model

    model = get_peft_model(model, lora)
    quantized = Counter(type(m).__name__ for m in model.modules() if type(m).__module__.startswith("bitsandbytes."))
    print(f"quantized base layers: {dict(quantized) or 'none'}")
    model.print_trainable_parameters()

    batch = {key: value.to(model.device) for key, value in build_batch(tokenizer, conversations()).items()}
    trained = int((batch["labels"] != IGNORE_INDEX).sum())
    print(f"loss on {trained} assistant tokens of {int(batch['attention_mask'].sum())} (prompt tokens are context)")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    for step in range(1, args.steps + 1):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}/{args.steps}  loss {loss.item():.4f}")
    if args.output:
        model.save_pretrained(args.output)
        print(f"adapter saved to {args.output}")


if __name__ == "__main__":
    main()
