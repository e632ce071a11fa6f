"""Tiny random Mistral/Mixtral checkpoints with the real Mistral tokenizer, for offline demos and tests.

Built once per set of arguments and cached (see `tiny_model`); a cached build that was truncated or corrupted since is
noticed and rebuilt. `teach` trains a copy of one, in seconds on a CPU, until it replies to given conversations with
their exact assistant messages (tool calls and thinking included), so a demo's replies really come out of `generate`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from .architectures import find_architecture
from .convert import STAGING_MARKER, staging_dir
from .formats.errors import NativeCheckpointError
from .formats.files import honour_umask, safetensors_size
from .hub import cache_dir
from .versions import REFERENCE_FORMATS, find_format

STAMP_FILE = "hf_mistral_kit_tiny.json"
_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the real models
    "head_dim": 32,  # vLLM's CPU attention refuses head_dim < 32
    "max_position_embeddings": 4096,
}
# Each kind's own fields on top of `_SIZES` (a vision-language kind: its `text_config`, beside a tiny vision tower).
_MIXTURE = {"num_experts_per_tok": 2}
# Multi-head latent attention (query/key heads 32 + 32, values 32, ranks 64), one dense layer then one layer of 4
# routed experts and a shared one: Mistral Small 4's and the Large line's layout. Every linear layer is a multiple of
# 32 x 64, which bitsandbytes' 4-bit CPU kernel needs.
_LATENT_MOE = {
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    **_MIXTURE,
    "moe_intermediate_size": 64,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 64,
    "qk_rope_head_dim": 32,
    "qk_nope_head_dim": 32,
    "v_head_dim": 32,
    "num_key_value_heads": 4,
    "head_dim": None,  # each config derives its own from the MLA sizes
    "max_position_embeddings": None,  # the class's: its YaRN scaling is stated against it
}
_VISION = {
    "model_type": "pixtral",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "head_dim": 16,
    "patch_size": 4,
    "image_size": 32,
}
# Fields a kind sets to None to leave them to its config class (which derives them from its other fields).
_UNSET = ("head_dim", "max_position_embeddings")
_KINDS: dict[str, dict[str, Any]] = {
    # Mistral 7B v0.1 attends within a 4096-token window; Mixtral 8x7B attends to everything.
    "mistral": {"sliding_window": 4096},
    "mixtral": {"sliding_window": None, "num_local_experts": 4, **_MIXTURE},
    # Ministral-8B-2410: sliding-window layers interleaved with full-attention ones.
    "ministral": {"sliding_window": 4096, "layer_types": ["sliding_attention", "full_attention"]},
    "ministral3": {"max_position_embeddings": None},
    "mistral4": {**_LATENT_MOE, "q_lora_rank": 64},
    # Mistral Small 3.1/3.2's layout: a Mistral text model beside a Pixtral vision tower (untied head).
    "mistral3": {"text_config": {"model_type": "mistral", "sliding_window": None}, "tie_word_embeddings": False},
    "mistral_large4": {
        "text_config": {
            "model_type": "mistral_large4_text",
            **_LATENT_MOE,
            "index_topk": 4,
            "index_head_dim": 32,
            "index_n_heads": 2,
        },
        "vision_config": {**_VISION, "hidden_act": "silu"},
    },
}
# The tokenizer a tiny model of each kind carries unless told: that of the instruct model most used of the kind,
# Mistral-7B-Instruct-v0.3 (v3: control tokens, tool calls), Mixtral-8x7B-Instruct-v0.1 (v1), Ministral-8B-Instruct-
# 2410 (tekken v3), Mistral-Small-3.2-24B-Instruct-2506 (tekken v11) and Mistral Small 4 (tekken v15); the demo's too.
# "tekken-vN" is a tekken file of that version derived from Mistral-Nemo's as mistral-common builds them
# (`tokenizers.derived`): the released files of those versions hold the same 131072-token vocabulary. Ministral 3 and
# the Large line get Nemo's own file (pass the model's tekken.json with `tokenizer=` for its version).
DEFAULT_TOKENIZERS = {
    "mistral": "v3",
    "mixtral": "v1",
    "ministral": "tekken",
    "ministral3": "tekken",
    "mistral4": "tekken-v15",
    "mistral3": "tekken-v11",
    "mistral_large4": "tekken",
}
DERIVED_PREFIX = "tekken-"
KINDS = tuple(_KINDS)


def tiny_model(
    kind: Literal[
        "mistral", "mixtral", "ministral", "ministral3", "mistral4", "mistral3", "mistral_large4"
    ] = "mistral",
    path: str | os.PathLike | None = None,
    seed: int = 0,
    native: bool = False,
    *,
    tokenizer: Literal["v1", "v2", "v3", "v7", "tekken", "tekken-v7", "tekken-v11", "tekken-v13", "tekken-v15"]
    | str
    | os.PathLike
    | None = None,
    **config_overrides: Any,
) -> Path:
    """Build a small random `kind` checkpoint at `path` and return the directory.

    `kind` is a model type of the family (`KINDS`): "mistral", "mixtral", "ministral" (sliding-window layers
    interleaved with full ones), "ministral3", "mistral4" (Mistral Small 4's layout: multi-head latent attention, a
    dense layer then routed and shared experts), "mistral3" (a Mistral text model beside a Pixtral vision tower, as
    Mistral Small 3.x) and "mistral_large4" (the Large line: MoE, latent attention, an attention indexer and a vision
    tower; transformers versions that define it). The checkpoint is what transformers' own class for the kind (its
    config.json's `architectures`) saves.

    The layout is Hugging Face's (`config.json`, `model.safetensors`, `generation_config.json`) unless `native=True`
    (`params.json`, `consolidated.safetensors`, plus `generation_config.json`). Both hold the real Mistral tokenizer
    from mistral-common, saved as the kit saves tokenizers (`tokenizer.json`, `tokenizer_config.json`,
    `chat_template.jinja`, and the SentencePiece file as `tokenizer.model` and under its versioned name). By default
    the tokenizer of the kind's best-known instruct model (`DEFAULT_TOKENIZERS`): v3 for "mistral" (Mistral-7B-Instruct-
    v0.3, vocabulary 32768), v1 for "mixtral" (Mixtral-8x7B-Instruct-v0.1, 32000); the demo's tiny models are these.
    `tokenizer=` picks another: "v1" (Mistral 7B v0.1/v0.2), "v2", "v3", "v7" (Mistral-Large-2411, 32768), and
    Mistral-Nemo's tekken.json with "tekken" (131072): every file of `hf_mistral_kit.versions.REFERENCE_FORMATS`;
    "tekken-v7", "tekken-v11", "tekken-v13" or "tekken-v15" for a tekken file of that version derived from Nemo's
    (`hf_mistral_kit.tokenizers.derived`; "mistral3" defaults to v11, Mistral Small 3.2's, and "mistral4" to v15,
    Mistral Small 4's). Any other Mistral tokenizer file of a version the kit templates is given by its path
    (`tokenizer="path/to/file"`, e.g. a model's own tekken.json): it is copied in under its usual name
    (`tekken.json`, `tokenizer.model.vN`), and the build is cached by the file's contents, not its path.
    Transformers, vLLM, llama.cpp's converter and mistral-common all read it (a tekken folder converts in llama.cpp
    without its tekken.json where mistral-common is installed: see the README).

    Sizes default to hidden 64, 2 layers, 4 heads of 32 over 2 KV heads (4 experts, top 2, for the mixtures of
    experts); any config field can be overridden, e.g. `sliding_window=8` to exercise the window on short sequences
    (for "mistral3" and "mistral_large4", fields of the text model: its `text_config`). Weights depend only
    on `seed` and the arguments (the caller's RNG state is left untouched).

    Builds are cached by their arguments: `path=None` returns a directory under `cache_dir()/tiny/` that is shared by
    every call with the same arguments (and the same kit, transformers and torch versions), so treat it as read-only
    (copy it to modify it). With an explicit `path`, a directory already built there with the same arguments is
    reused without rebuilding; a directory holding anything else is an error. A cached build whose files were
    truncated or changed since is rebuilt, with a warning.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}.")
    from .modeling.registration import family_row

    family_row(kind)  # an architecture the installed transformers lacks: the error names the release that has it
    if native and "text_config" in _KINDS[kind]:
        raise ValueError(
            f"native=True: the kit writes Mistral's native layout for text models only, and {kind!r} is a "
            "vision-language model; build it in Hugging Face's layout (native=False)."
        )
    tokenizer_file, tokenizer_stamp = _tokenizer_source(DEFAULT_TOKENIZERS[kind] if tokenizer is None else tokenizer)
    stamp = {"kind": kind, "seed": seed, "native": native, "tokenizer": tokenizer_stamp, "config": config_overrides}
    target = Path(path) if path is not None else _cache_path(stamp)

    state = _state(target, stamp)
    if state == "built":
        return target
    if state == "foreign":
        raise FileExistsError(f"{target} exists and does not hold this tiny model; delete it or pick another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    try:
        _build(staging, stamp, tokenizer_file)
        (staging / STAGING_MARKER).unlink()
        honour_umask(staging)
        if state == "damaged":
            warnings.warn(
                f"the cached tiny {kind} in {target} was incomplete or damaged (a file is missing, truncated or "
                "changed): rebuilt it.",
                stacklevel=2,
            )
            shutil.rmtree(target)
        elif target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError:
        if _state(target, stamp) != "built":  # not a concurrent build of the same model
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


Conversation = Sequence[Mapping[str, Any]]


def teach(
    model_dir: str | os.PathLike,
    conversations: Sequence[Conversation],
    tools: Sequence[Any] | None = None,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
) -> Path:
    """Fine-tune the small checkpoint in `model_dir` until it replies to `conversations` exactly as they say, save it
    back there, and return the directory.

    Each conversation is a list of messages as `apply_chat_template` takes them, with one or more assistant messages
    (text, `tool_calls`, `reasoning_content`); `tools` are the tools offered in all of them (schemas or functions).
    Once taught, greedy `generate` after the prompt of each assistant message,
    `apply_chat_template(conversation[:i], tools=tools, add_generation_prompt=True)`, writes exactly that message's
    tokens and the end of its turn (`</s>`), which `parse_response` and `transformers serve` read back.

    Training is a full fine-tune in float32 on the CPU (one thread): AdamW at `lr`, every conversation in one batch
    (`apply_chat_template(conversation, tools=tools, return_assistant_tokens_mask=True)`), the loss on the assistant's
    tokens only. It stops once each of those tokens is the model's first choice by a margin (its logit 1 above any
    other) and `generate` has checked every reply; a model that has not learned them in `steps` steps raises
    RuntimeError, and the directory is left as it was. Seconds for a `tiny_model`; the same arguments give the same
    weights (the caller's RNG state is left untouched).

    The directory keeps its layout (Hugging Face's, written with `save_pretrained` so plain transformers loads it,
    or Mistral's native one) and its tokenizer files. A `tiny_model` build it holds records the teaching, so
    `tiny_model` no longer takes it for the untouched build; a shared build (`tiny_model(path=None)`) is refused:
    copy it first.
    """
    import torch

    from .auto import AutoModelForCausalLM
    from .tokenizers.loading import load_tokenizer

    directory = Path(model_dir)
    shared = (cache_dir() / "tiny").resolve()
    if directory.resolve().is_relative_to(shared):
        raise ValueError(
            f"{directory} is a shared tiny_model build (treat it as read-only): copy it, or build one with "
            "tiny_model(path=...), and teach that."
        )
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be at least 1 and lr positive, got steps={steps}, lr={lr}.")
    tokenizer = load_tokenizer(directory)
    lessons = [_lessons(tokenizer, conversation, tools, number) for number, conversation in enumerate(conversations)]
    if not lessons:
        raise ValueError("teach needs at least one conversation.")
    native = (directory / "params.json").is_file() and not (directory / "config.json").is_file()
    threads = torch.get_num_threads()
    try:
        # One thread: a tiny model's tensors gain nothing from more, which stall when the CPUs are busy elsewhere.
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
            _train(model, tokenizer, lessons, steps, lr, directory)
    finally:
        torch.set_num_threads(threads)
    # Written beside the folder, then moved in: the loaded weights may still map the files being replaced.
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}-taught-") as staging:
        _save(model, tokenizer, Path(staging), native=native)
        honour_umask(Path(staging))
        for file in Path(staging).iterdir():
            os.replace(file, directory / file.name)
    stamp_file = directory / STAMP_FILE
    if stamp_file.is_file():
        stamp = json.loads(stamp_file.read_text())
        stamp.pop("files", None)
        rows = [[lesson.ids, lesson.mask] for lesson in lessons]
        digest = hashlib.sha256(json.dumps([rows, steps, lr, seed]).encode()).hexdigest()[:16]
        stamp["taught"] = [*stamp.get("taught", []), digest]
        _write_stamp(directory, stamp)
    return directory


def _tokenizer_source(tokenizer: str | os.PathLike) -> tuple[Path, str | dict[str, str]]:
    """The tokenizer file of `tiny_model(tokenizer=...)` and how its stamp records it: a reference key as it is, a
    file by its contents."""
    if isinstance(tokenizer, str) and tokenizer in REFERENCE_FORMATS:
        from .tokenizers.loading import reference_tokenizer_file

        return reference_tokenizer_file(tokenizer), tokenizer
    if isinstance(tokenizer, str) and tokenizer.startswith(DERIVED_PREFIX) and tokenizer not in REFERENCE_FORMATS:
        from .tokenizers.derived import derived_tekken_file

        return derived_tekken_file(tokenizer.removeprefix(DERIVED_PREFIX)), tokenizer
    file = Path(tokenizer)
    if not file.is_file():
        raise ValueError(
            f"tokenizer must be one of {', '.join(REFERENCE_FORMATS)}, got {str(tokenizer)!r}, which is no file either "
            "(a Mistral tokenizer file is also taken, by its path)."
        )
    return file, {"sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def _cache_path(stamp: dict[str, Any]) -> Path:
    """Where `tiny_model(path=None)` keeps the build of these arguments."""
    versions = {name: _version(name) for name in ("hf-mistral-kit", "transformers", "torch")}
    key = json.dumps({"stamp": stamp, "versions": versions}, sort_keys=True, default=repr)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "tiny" / f"{stamp['kind']}-{digest}"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _state(directory: Path, stamp: dict[str, Any]) -> Literal["absent", "built", "damaged", "foreign"]:
    """What `directory` holds: nothing, this build intact, this build damaged since, or something else."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return "absent"
    try:
        recorded = json.loads((directory / STAMP_FILE).read_text())
        files = recorded.pop("files", None)  # None: built by a kit that recorded no files
    except (OSError, ValueError, AttributeError):
        return "foreign"
    if recorded != json.loads(json.dumps(stamp)):
        return "foreign"
    return "built" if _files_intact(directory, files) else "damaged"


def _files_intact(directory: Path, files: Any) -> bool:
    """The recorded files and nothing else are there, each with its recorded size and a readable safetensors header
    (a caller that added or removed files in a shared build gets a fresh one)."""
    if not isinstance(files, dict) or not files:
        return False
    present = {path.name for path in directory.iterdir() if path.name != STAMP_FILE and path.name[0] != "."}
    if present != set(files):
        return False
    for name, size in files.items():
        file = directory / name
        try:
            if not file.is_file() or file.stat().st_size != size:
                return False
            if file.suffix == ".safetensors" and safetensors_size(file, "") != size:
                return False
        except (OSError, NativeCheckpointError):
            return False
    return True


def tiny_config(kind: str, vocab_size: int, /, **overrides: Any) -> Any:
    """The transformers config (upstream class) of a tiny `kind`: `_SIZES`, the kind's fields, then `overrides`; a
    vision-language kind gets the sizes and overrides in its `text_config` (its own fields stay at the top)."""
    from transformers import AutoConfig

    fields = dict(_KINDS[kind])
    wrapped = fields.pop("text_config", None)
    text = {**_SIZES, **(wrapped if wrapped is not None else fields), "vocab_size": vocab_size, **overrides}
    text = {key: value for key, value in text.items() if not (key in _UNSET and value is None)}
    if wrapped is None:
        return AutoConfig.for_model(kind, **text)
    fields.setdefault("vision_config", _VISION)
    return AutoConfig.for_model(kind, text_config=text, **fields)


def _build(directory: Path, stamp: dict[str, Any], tokenizer_file: Path) -> None:
    import torch
    import transformers

    from .tokenizers.loading import load_tokenizer

    row = REFERENCE_FORMATS.get(stamp["tokenizer"]) if isinstance(stamp["tokenizer"], str) else None
    if row is None:  # a derived file or one given by its path: its version and kind say under which name it goes
        tokenizer = load_tokenizer(tokenizer_file)
        row = find_format(tokenizer.mistral_version, tokenizer.kind)
        if row is None:
            raise ValueError(f"{tokenizer_file} is no Mistral tokenizer file of a version the kit templates.")
    shutil.copyfile(tokenizer_file, directory / row.file_name)
    tokenizer = load_tokenizer(directory / row.file_name)
    config = tiny_config(stamp["kind"], len(tokenizer), **stamp["config"])
    model_class = getattr(transformers, find_architecture(stamp["kind"]).causal_lm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stamp["seed"])
        model = model_class(config)
    _save(model, tokenizer, directory, native=stamp["native"])
    _write_stamp(directory, stamp)


def _save(model: Any, tokenizer: Any, directory: Path, native: bool) -> None:
    """The model and tokenizer, in Hugging Face's layout or (`native`) Mistral's."""
    if native:
        from .formats.huggingface import native_tensors_from_hf
        from .formats.hyperparameters import as_config_dict
        from .formats.native import write_native

        config_dict = as_config_dict(model.config)
        write_native(native_tensors_from_hf(model.state_dict(), config_dict), config_dict, directory)
        model.generation_config.save_pretrained(directory)
    else:
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _write_stamp(directory: Path, stamp: dict[str, Any]) -> None:
    """Record what `directory` holds, and its files with their sizes (see `_files_intact`)."""
    files = {
        file.name: file.stat().st_size
        for file in sorted(directory.iterdir())
        if file.is_file() and file.name[0] != "." and file.name != STAMP_FILE
    }
    (directory / STAMP_FILE).write_text(json.dumps({**stamp, "files": files}, indent=2) + "\n")


_MARGIN = 1.0  # teach's logit margin: see _train


class _Lesson:
    """One conversation to teach: its ids, its assistant mask, and each assistant reply with its prompt."""

    def __init__(self, ids: list[int], mask: list[int], replies: list[tuple[list[int], list[int]]], number: int):
        self.ids, self.mask, self.replies, self.number = ids, mask, replies, number


def _lessons(tokenizer: Any, conversation: Conversation, tools: Sequence[Any] | None, number: int) -> _Lesson:
    """The conversation as `teach` trains and checks it."""
    rendered = tokenizer.apply_chat_template(
        list(conversation), tools=tools, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(rendered["input_ids"]), [int(bool(m)) for m in rendered["assistant_masks"]]
    runs: list[list[int]] = []
    for index, (token, assistant) in enumerate(zip(ids, mask, strict=True)):
        if assistant:
            if index == 0 or not mask[index - 1]:
                runs.append([])
            runs[-1].append(token)
    turns = [index for index, message in enumerate(conversation) if message.get("role") == "assistant"]
    if not turns or len(runs) != len(turns):
        raise ValueError(
            f"conversations[{number}]: {len(turns)} assistant message(s) but {len(runs)} assistant part(s) in its "
            "rendering: teach needs conversations with assistant messages, in a template that marks them "
            "({% generation %}, as the kit's templates do)."
        )
    replies = []
    for turn, reply in zip(turns, runs, strict=True):
        prompt = tokenizer.apply_chat_template(
            list(conversation[:turn]), tools=tools, add_generation_prompt=True, return_dict=True
        )
        replies.append((list(prompt["input_ids"]), reply))
    return _Lesson(ids, mask, replies, number)


def _train(model: Any, tokenizer: Any, lessons: list[_Lesson], steps: int, lr: float, directory: Path) -> None:
    """`teach`'s optimizer steps, until every reply is learned (see `_replies_as_taught`)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(lesson.ids) for lesson in lessons)
    ids = torch.tensor([lesson.ids + [pad] * (width - len(lesson.ids)) for lesson in lessons])
    attention = torch.tensor([[1] * len(lesson.ids) + [0] * (width - len(lesson.ids)) for lesson in lessons])
    learned = torch.tensor([lesson.mask + [0] * (width - len(lesson.mask)) for lesson in lessons], dtype=torch.bool)
    # The logits at position t predict token t + 1: only those predicting an assistant token are computed.
    positions = learned[:, 1:].nonzero(as_tuple=True)
    targets = ids[:, 1:][positions]
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    for _ in range(steps):
        model.train()
        logits = head(decoder(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1][positions])
        # Learned: each taught token's logit beats every other by MARGIN, so that greedy decoding elsewhere (another
        # process, a KV cache, `transformers serve`) picks the same tokens; generate then checks the replies.
        taught = logits.detach().gather(1, targets[:, None])[:, 0]
        others = logits.detach().scatter(1, targets[:, None], float("-inf")).max(dim=1).values
        beaten = (taught - others).min().item() >= _MARGIN
        if beaten and _replies_as_taught(model, tokenizer, lessons) is None:
            return
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits, targets).backward()
        optimizer.step()
    mismatch = _replies_as_taught(model, tokenizer, lessons)
    if mismatch is None:
        return
    number, reply, expected, generated = mismatch
    raise RuntimeError(
        f"teach: the model in {directory} did not learn its replies in {steps} steps (lr={lr}): after the prompt of "
        f"assistant reply {reply} of conversations[{number}], greedy generate writes {generated!r} instead of "
        f"{expected!r}. Give more steps, or shorter or fewer replies; the directory is unchanged."
    )


def _replies_as_taught(model: Any, tokenizer: Any, lessons: list[_Lesson]) -> tuple[int, int, str, str] | None:
    """None when greedy generation after each reply's prompt writes exactly that reply, else the first that differs
    (conversation, reply, expected and generated text)."""
    import torch

    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for lesson in lessons:
            for index, (prompt, reply) in enumerate(lesson.replies):
                inputs = torch.tensor([prompt])
                output = model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    do_sample=False,
                    max_new_tokens=len(reply),
                    pad_token_id=pad,
                )
                generated = output[0, len(prompt) :].tolist()
                if generated != reply:
                    decode = lambda tokens: tokenizer.decode(tokens, skip_special_tokens=False)  # noqa: E731
                    return lesson.number, index, decode(reply), decode(generated)
    return None
