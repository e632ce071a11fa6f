"""One streamed reply: `generate` in a thread feeding a `TextIteratorStreamer`, stoppable from the main thread.

Ctrl-C raises KeyboardInterrupt in the main thread only (where the streamer is read), so the reply is stopped by an
event that a stopping criterion checks between tokens: the text so far is kept and the session goes on.

`marks` says what shows in place of a control token of the reply (its spelling, a marker for [THINK], nothing for
the end of sequence; each starts a new run of decoded text, as `parse_response` decodes it) and which ones end what is
streamed ([TOOL_CALLS]: the caller shows the calls once the reply is parsed). Without marks, control tokens are left
out of the text.
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
    prompt_ids: tuple[int, ...] = ()
    ids: tuple[int, ...] = ()  # the generated ids (all of them, also after an interruption)
    shown: int = 0  # how many of `ids` the text streamed so far covers (all, unless the reply was interrupted)
    held: int | None = None  # the index in `ids` of the control token that ended the streamed text (None: none did)

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


class _ReplyStreamer(TextIteratorStreamer):
    """The reply's text as it is decoded, with the control tokens of `marks` (id -> the text shown in its place, or
    None: nothing more is shown). Each queued text comes with `count`, the number of reply ids received by then."""

    def __init__(self, tokenizer: Any, marks: dict[int, str | None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.marks = marks
        self.count = 0
        self.held: int | None = None  # the index of the reply id that ended what is shown

    def put(self, value: Any) -> None:
        if self.next_tokens_are_prompt:
            super().put(value)  # the prompt, which is not shown
            return
        if value.dim() > 1:
            value = value[0]  # one sequence (generate streams batches of one only)
        start = 0
        for index, token in enumerate(value.tolist()):
            if self.held is None and token in self.marks:
                self._put(value[start:index])
                self._flush()
                mark, self.count = self.marks[token], self.count + 1
                if mark is None:
                    self.held = self.count - 1
                else:
                    self.on_finalized_text(mark)
                start = index + 1
        if self.held is None:
            self._put(value[start:])
        else:
            self.count += len(value) - start

    def _put(self, value: Any) -> None:
        if len(value):
            self.count += len(value)
            super().put(value)

    def _flush(self) -> None:
        """Hand out the text decoded so far (TextStreamer holds back the end of a word until it is complete)."""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            self.on_finalized_text(text[self.print_len :])
            self.token_cache, self.print_len = [], 0

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put((text, self.count), timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)


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
    tools: list[Any] | None = None,
    marks: dict[int, str | None] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> Reply:
    """Generate the assistant's reply to `messages`, passing each piece of text to `write` as it is decoded.

    `temperature`: None keeps the model's generation config, 0 is greedy, anything else samples. `tools`: the tools
    the template offers. `marks`: control token id -> the text written in its place, or None for a token that ends
    what is written (the rest of the reply is generated but not streamed); other control tokens are left out.
    `template_kwargs`: more variables for the chat template (`reasoning_effort`).
    """
    inputs = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
        **(template_kwargs or {}),
    ).to(model.device)
    prompt_tokens = inputs["input_ids"].shape[1]
    streamer = _ReplyStreamer(tokenizer, marks or {})
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
    shown = 0
    thread = threading.Thread(target=generate, name="generate", daemon=True)
    thread.start()
    interrupted = False
    try:
        for text, count in streamer:
            pieces.append(text)
            write(text)
            shown = count
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
    ids = result["ids"][0].tolist()
    new = tuple(ids[prompt_tokens:])
    return Reply(
        "".join(pieces),
        prompt_tokens,
        len(new),
        seconds,
        tuple(stopper.times),
        interrupted,
        prompt_ids=tuple(ids[:prompt_tokens]),
        ids=new,
        shown=shown if interrupted else len(new),
        held=streamer.held,
    )
