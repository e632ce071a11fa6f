"""One streamed reply: `generate` in a thread feeding a `TextIteratorStreamer`, stoppable from the main thread.

Ctrl-C raises KeyboardInterrupt in the main thread only (where the streamer is read), so the reply is stopped by an
event that a stopping criterion checks between tokens: the text so far is kept and the session goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..chat.templates import template_name as kit_template_name
from ..loading import end_of_turn_ids


@dataclass(frozen=True)
class Reply:
    """A finished reply. `token_times` are seconds since the call started at which each new token existed."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    token_times: tuple[float, ...] = ()
    interrupted: bool = False

    @property
    def first_token_seconds(self) -> float:
        """Prefill plus the first token: what the user waits before text appears."""
        return self.token_times[0] if self.token_times else self.seconds

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token (prefill excluded): what the model sustains."""
        if len(self.token_times) < 2:
            return 0.0
        return (len(self.token_times) - 1) / (self.token_times[-1] - self.token_times[0])


class _StopWhenSet(StoppingCriteria):
    """Stops generation once `event` is set; also timestamps every generated token (it runs once per step)."""

    def __init__(self, event: threading.Event, start: float):
        self.event, self.start = event, start
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.times.append(time.perf_counter() - self.start)
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def template_name(tokenizer: Any) -> str:
    """The kit template a tokenizer carries, or "custom"."""
    return kit_template_name(tokenizer.chat_template) or "custom"


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids for generation: the model's, plus the template's end-of-turn token (ChatML's <|im_end|>)."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos if eos is not None else tokenizer.eos_token_id]
    ids += end_of_turn_ids(tokenizer)
    return [i for i in dict.fromkeys(ids) if i is not None]


def stream_reply(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, Any]],
    write: Callable[[str], Any],
    *,
    max_new_tokens: int,
    temperature: float | None = None,
) -> Reply:
    """Generate the assistant's reply to `messages`, passing each piece of text to `write` as it is decoded.

    `temperature`: None keeps the model's generation config, 0 is greedy, anything else samples.
    """
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    prompt_tokens = inputs["input_ids"].shape[1]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    eos = stop_token_ids(model, tokenizer)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
    }
    if temperature == 0:
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    elif temperature is not None:
        options.update(do_sample=True, temperature=temperature)
    result: dict[str, Any] = {}
    start = time.perf_counter()
    stopper = _StopWhenSet(stop, start)

    def generate() -> None:
        try:
            result["ids"] = model.generate(
                **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([stopper]), **options
            )
        except BaseException as error:  # handed to the main thread, which re-raises it
            result["error"] = error
            streamer.end()

    pieces: list[str] = []
    thread = threading.Thread(target=generate, name="generate", daemon=True)
    thread.start()
    interrupted = False
    try:
        for text in streamer:
            pieces.append(text)
            write(text)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()  # the reply is over for the reader: make sure the thread ends too
    if interrupted:
        for _ in streamer:  # drain what was generated but not shown yet: the reply is what the user saw
            pass
    thread.join()
    seconds = time.perf_counter() - start
    if "error" in result:
        raise result["error"]
    new_tokens = result["ids"].shape[1] - prompt_tokens
    return Reply("".join(pieces), prompt_tokens, new_tokens, seconds, tuple(stopper.times), interrupted)
