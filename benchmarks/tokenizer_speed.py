"""Tokenizer speed, as ratios measured in one run (higher than 1.0 means the kit is faster).

1. Chat encoding: `kit_tokenizer.apply_chat_template(chat)` against mistral-common's
   `encode_chat_completion(ChatCompletionRequest.from_openai(chat))`, one multi-turn conversation per call (what a
   data-preparation loop does), and the kit's batched call against the same mistral-common loop.
2. Plain encoding of a batch of texts: the kit's tokenizer against the fast tokenizer transformers converts from the
   same `tokenizer.model` on its own (what a folder without tokenizer.json gets). The kit's ids start with `<s>`, which
   that tokenizer leaves out.

Rounds alternate between the two sides, and which side goes first, so that a busy core slows both alike; the ratio
of the medians is printed. Single calls on this 2-core machine swing by 2x either way when the host is busy, so it
takes ~25 rounds for the printed ratio to settle within a few percent.

    python benchmarks/tokenizer_speed.py [--rounds 25] [--conversations 200]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers import AutoTokenizer

import hf_mistral_kit as kit

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "I",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", "  ", "\n\n"])


def conversation(rng: random.Random) -> list[dict[str, str]]:
    chat = [{"role": "system", "content": sentence(rng)}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(2, 5)):
        chat.append({"role": "user", "content": " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))})
        chat.append({"role": "assistant", "content": " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))})
    return chat


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def paired(kit_side, other_side, rounds: int) -> tuple[float, float]:
    """Medians of alternating rounds, each side going first in every other one: (kit seconds, other seconds)."""
    kit_times, other_times = [], []
    kit_side(), other_side()  # warm up caches
    for round_ in range(rounds):
        if round_ % 2:
            other_times.append(timed(other_side))
            kit_times.append(timed(kit_side))
        else:
            kit_times.append(timed(kit_side))
            other_times.append(timed(other_side))
    return statistics.median(kit_times), statistics.median(other_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(0)
    chats = [conversation(rng) for _ in range(args.conversations)]
    texts = [" ".join(sentence(rng) for _ in range(rng.randint(1, 6))) for _ in range(2000)]

    print(f"{'what':<52} {'kit':>10} {'other':>10} {'other/kit':>10}")
    for version in ("v1", "v3"):
        model_file = kit.reference_tokenizer_file(version)
        tokenizer = kit.load_tokenizer(model_file)
        # Training samples end with the assistant's reply: mistral-common's fine-tuning validation.
        reference = MistralTokenizer.from_file(str(model_file), mode=ValidationMode.finetuning)

        def mistral_common(reference=reference):
            for chat in chats:
                reference.encode_chat_completion(ChatCompletionRequest.from_openai(chat))

        def kit_each(tokenizer=tokenizer):
            for chat in chats:
                tokenizer.apply_chat_template(chat)

        def kit_batch(tokenizer=tokenizer):
            tokenizer.apply_chat_template(chats)

        for label, kit_side in (("one call per conversation", kit_each), ("one batched call", kit_batch)):
            ours, theirs = paired(kit_side, mistral_common, args.rounds)
            per = len(chats) / ours, len(chats) / theirs
            print(
                f"{version} chat encoding, {label:<27} {per[0]:>7.0f}/s {per[1]:>7.0f}/s {theirs / ours:>10.2f}"
                "   (vs mistral-common)"
            )

        with tempfile.TemporaryDirectory() as directory:
            shutil.copy(model_file, Path(directory) / "tokenizer.model")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = AutoTokenizer.from_pretrained(directory)
            ours, theirs = paired(
                lambda tok=tokenizer: tok(texts), lambda converted=converted: converted(texts), args.rounds
            )
            print(
                f"{version} plain batch encoding, {len(texts)} texts{'':<13} {len(texts) / ours:>7.0f}/s "
                f"{len(texts) / theirs:>7.0f}/s {theirs / ours:>10.2f}   (vs transformers' converted fast)"
            )


if __name__ == "__main__":
    main()
