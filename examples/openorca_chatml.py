"""Mistral-7B-OpenOrca: a Mistral fine-tune that speaks ChatML (<|im_start|>/<|im_end|>) instead of [INST].

The model card (../shared seed 004) formats chats with `tokenizer.apply_chat_template(chat, tokenize=False,
add_generation_prompt=True)`; the kit's "chatml" template renders that example byte for byte, and `load_tokenizer`
gives an OpenOrca checkpoint (tokenizer.model + added_tokens.json) that template by itself. A plain Mistral
checkpoint can be given ChatML too: the two tokens are added and the embeddings resized (they start untrained).

    python examples/openorca_chatml.py                                  # tiny random Mistral + ChatML, offline
    python examples/openorca_chatml.py --model Open-Orca/Mistral-7B-OpenOrca --preset 4bit
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

import hf_mistral_kit as kit

# The card's example conversation.
CHAT = [
    {
        "role": "system",
        "content": "You are MistralOrca, a large language model trained by Alignment Lab AI. Write out your reasoning "
        "step-by-step to be sure you get the right answers!",
    },
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "I am doing well!"},
    {"role": "user", "content": "Please tell me about how mistral winds have attracted super-orcas."},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or hub id (default: a tiny random Mistral)")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()  # holds the tiny model, if any; removed when the script ends
    path = args.model or kit.tiny_model("mistral", path=Path(scratch.name) / "tiny-mistral")

    # The prompt, exactly as the card shows it (no tokenizer needed).
    print(kit.render(CHAT, "chatml", add_generation_prompt=True), end="")

    model, tokenizer = kit.load_model(path, preset=args.preset)
    if "<|im_start|>" not in tokenizer.get_vocab():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it asks for the resize done right here
            kit.apply_chat_template(tokenizer, "chatml")
        model.resize_token_embeddings(len(tokenizer))
        print(f"\n(added <|im_start|>/<|im_end|> to {path}: vocabulary {len(tokenizer)}, new embeddings untrained)")
    elif tokenizer.chat_template != kit.get_chat_template("chatml"):
        tokenizer.chat_template = kit.get_chat_template("chatml")

    inputs = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    inputs = inputs.to(model.device)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(0)
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, eos_token_id=im_end, pad_token_id=im_end)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"assistant: {reply}")


if __name__ == "__main__":
    main()
