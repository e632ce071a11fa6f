"""Mistral SentencePiece tokenizers whose chat encoding equals mistral-common's, token for token.

Rendering a chat template and tokenizing the text cannot be exact with the stock Hugging Face tokenizers: their
pre-tokenizers split runs of spaces differently from SentencePiece, and a user message that spells "[INST]" or "</s>"
becomes that control token. `MistralSentencePieceTokenizer` runs the real SentencePiece model on every piece of text
between control tokens, the way mistral-common does, and its `apply_chat_template` marks control-token spellings in the
conversation so they stay text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import mistral_common
import sentencepiece as spm
from transformers import BatchEncoding, PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import import_protobuf
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils.chat_template_utils import render_jinja_template

from .conversation import prepare_chat
from .templates import get_chat_template, template_name

MISTRAL_COMMON_DATA = Path(mistral_common.__file__).parent / "data"

# The tokenizer files mistral-common ships, by the version of Mistral's instruct format they belong to.
REFERENCE_TOKENIZER_FILES = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
}

# Which chat template reproduces which tokenizer version. v2 (Mixtral-8x22B's first release) differs from v3 only in
# how tool calls and results are written: it gets the v3 template and refuses conversations with tools.
TEMPLATE_FOR_VERSION = {"v1": "mistral_v1", "v2": "mistral_v3", "v3": "mistral_v3"}

# The control tokens of the v2/v3 vocabularies that chat templates write (SentencePiece "control" pieces).
V3_CONTROL_TOKENS = (
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
)

# Inserted after the first character of a control-token spelling found in user data, so that the spelling no longer
# matches the token; doubled when it occurs in the data itself. Removed again before SentencePiece sees the text.
_MARK = "\ue000"
_UNMARK_RE = re.compile(f"{_MARK}(.)", re.DOTALL)


def reference_tokenizer_file(version: str) -> Path:
    """The real Mistral tokenizer file of `version` ("v1", "v2", "v3") shipped inside mistral-common."""
    if version not in REFERENCE_TOKENIZER_FILES:
        raise ValueError(f"Unknown tokenizer version {version!r}; expected one of {sorted(REFERENCE_TOKENIZER_FILES)}.")
    return MISTRAL_COMMON_DATA / REFERENCE_TOKENIZER_FILES[version]


def sentencepiece_version(model_file: str | Path, model: spm.SentencePieceProcessor) -> str:
    """The instruct-format version of a Mistral SentencePiece file (`model` loaded from it): from its suffix, else
    from its vocabulary."""
    match = re.search(r"\.model\.(v\d+)", Path(model_file).name)
    if match:
        return match.group(1)
    if model.get_piece_size() <= 32000 or model.piece_to_id("[INST]") == model.unk_id():
        return "v1"
    return "v3" if model.id_to_piece(10) == "[IMG]" else "v2"


def _mark_text(text: str, control_re: re.Pattern) -> str:
    text = text.replace(_MARK, _MARK + _MARK)
    return control_re.sub(lambda m: m.group(0)[0] + _MARK + m.group(0)[1:], text)


def mark_control_tokens(value: Any, control_re: re.Pattern) -> Any:
    """Break every control-token spelling inside strings (recursively through dicts and lists, keys included)."""
    if isinstance(value, str):
        return _mark_text(value, control_re)
    if isinstance(value, Mapping):
        return {mark_control_tokens(k, control_re): mark_control_tokens(v, control_re) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mark_control_tokens(v, control_re) for v in value]
    return value


def unmark(text: str) -> str:
    """Undo `mark_control_tokens` on rendered text."""
    return _UNMARK_RE.sub(lambda m: m.group(1), text)


def _unmark_with_positions(text: str) -> tuple[str, list[int]]:
    """`unmark(text)` and, for each of its characters, its index in `text`."""
    chars: list[str] = []
    positions: list[int] = []
    i = 0
    while i < len(text):
        if text[i] == _MARK and i + 1 < len(text):
            i += 1  # the mark itself; the next character is kept whatever it is (a doubled mark is one literal)
        chars.append(text[i])
        positions.append(i)
        i += 1
    return "".join(chars), positions


class MistralSentencePieceTokenizer(SentencePieceBackend):
    """A transformers tokenizer over a Mistral SentencePiece model that encodes like mistral-common.

    Text is split at added/special tokens; each piece of text is encoded by SentencePiece on its own. With
    `legacy=True` (tokenizer v1, as Mistral-7B-Instruct-v0.1's tokenizer.json) every piece gets SentencePiece's dummy
    prefix space; with `legacy=False` (v2/v3, as Mistral-7B-Instruct-v0.3's) only a piece at the very start of the
    input does, and templates write the space after control tokens themselves.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        legacy: bool = True,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        special_tokens_pattern: str = "bos",
        **kwargs: Any,
    ):
        super().__init__(
            vocab_file=vocab_file,
            legacy=True,  # keep the base class's SentencePiece model untouched (dummy prefix on)
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            special_tokens_pattern=special_tokens_pattern,
            **kwargs,
        )
        self.legacy = legacy
        self.init_kwargs["legacy"] = legacy

    @cached_property
    def _sp_without_prefix(self) -> spm.SentencePieceProcessor:
        proto = import_protobuf().ModelProto.FromString(self.sp_model.serialized_model_proto())
        proto.normalizer_spec.add_dummy_prefix = False
        model = spm.SentencePieceProcessor()
        model.LoadFromSerializedProto(proto.SerializeToString())
        return model

    def _text_pieces(self, text: str, at_start: bool):
        model = self.sp_model if (self.legacy or at_start) else self._sp_without_prefix
        return model.encode(text, out_type="proto").pieces

    def _chunks(self, text: str, split_special_tokens: bool) -> list[tuple[int, str]]:
        """(offset, chunk) pairs: added/special tokens alone, text in between."""
        parts = [text] if split_special_tokens else self.tokens_trie.split(text)
        chunks, offset = [], 0
        for part in parts:
            if part:
                chunks.append((offset, part))
            offset += len(part)
        return chunks

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        split_special_tokens = kwargs.pop("split_special_tokens", self.split_special_tokens)
        text, kwargs = self.prepare_for_tokenization(text, **kwargs)
        tokens: list[str] = []
        for offset, chunk in self._chunks(text, split_special_tokens):
            if not split_special_tokens and chunk in self._added_tokens_encoder:
                tokens.append(chunk)
            else:
                tokens.extend(p.piece for p in self._text_pieces(chunk, at_start=offset == 0))
        return tokens

    def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` (no BOS/EOS added) and the character span of `text` each one covers."""
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for offset, chunk in self._chunks(text, split_special_tokens=False):
            if chunk in self._added_tokens_encoder:
                ids.append(self._added_tokens_encoder[chunk])
                spans.append((offset, offset + len(chunk)))
                continue
            clean, positions = _unmark_with_positions(chunk)
            byte_to_char = [i for i, ch in enumerate(clean) for _ in ch.encode("utf-8")] + [len(clean)]
            for piece in self._text_pieces(clean, at_start=offset == 0):
                start, end = byte_to_char[piece.begin], byte_to_char[piece.end]
                first = positions[start] if start < len(positions) else len(chunk)
                last = positions[end - 1] + 1 if end > start else first
                ids.append(piece.id)
                spans.append((offset + first, offset + last))
        return ids, spans

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode_pieces(tokens)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        # Like mistral-common: text between special tokens is decoded by SentencePiece, special tokens kept verbatim.
        # A run of text that does not open the output keeps its leading space unless every run got a dummy prefix.
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        special_ids = set(self.all_special_ids)
        added_ids = special_ids | set(self._added_tokens_decoder)
        out: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                model = self.sp_model if (self.legacy or not out) else self._sp_without_prefix
                out.append(model.decode(run))
                run.clear()

        for token_id in ids:
            if token_id not in added_ids:
                run.append(token_id)
                continue
            flush()
            if not (skip_special_tokens and token_id in special_ids):
                out.append(self.convert_ids_to_tokens(token_id))
        flush()
        return "".join(out)

    @cached_property
    def _control_re(self) -> re.Pattern:
        tokens = set(self.all_special_tokens) | set(self._added_tokens_encoder)
        tokens |= {t for t in V3_CONTROL_TOKENS if self.sp_model.piece_to_id(t) != self.sp_model.unk_id()}
        return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        self.__dict__.pop("_control_re", None)
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]] | list[list[dict[str, Any]]],
        tools: list[dict | Any] | None = None,
        documents: list[dict[str, str]] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = True,
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_dict: bool = True,
        return_assistant_tokens_mask: bool = False,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        """`PreTrainedTokenizerBase.apply_chat_template`, with mistral-common's encoding.

        Differences that make the ids exact: tool results and arguments are JSON-normalized as mistral-common does,
        control-token spellings inside the conversation stay text, and each text segment is encoded on its own.
        `continue_final_message=True` leaves the final assistant message open (mistral-common's `prefix=True`).
        """
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible.")
        if return_assistant_tokens_mask and not (tokenize and return_dict):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        is_batched = (
            isinstance(conversation, (list, tuple))
            and bool(conversation)
            and (isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
        )
        conversations = list(conversation) if is_batched else [conversation]
        # Plain, validated data (hf_mistral_kit.conversation), then every string in it escaped.
        template = self.get_chat_template(chat_template, tools)
        name, mode = template_name(template), kwargs.pop("validation_mode", None)
        chats = [
            prepare_chat(
                chat,
                tools,
                documents,
                template=name,
                version=self.init_kwargs.get("mistral_version"),
                mode=mode,
                continue_final_message=continue_final_message,
                add_generation_prompt=add_generation_prompt,
            )
            for chat in conversations
        ]
        rendered, generation_indices = render_jinja_template(
            conversations=[mark_control_tokens(chat.messages, self._control_re) for chat in chats],
            tools=mark_control_tokens(chats[0].tools, self._control_re),
            documents=mark_control_tokens(chats[0].documents, self._control_re),
            chat_template=template,
            continue_final_message=continue_final_message and name is None,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **kwargs},
        )
        if not tokenize:
            texts = [unmark(text) for text in rendered]
            return texts if is_batched else texts[0]

        rows = []
        for i, text in enumerate(rendered):
            ids, spans = self.encode_with_spans(text)
            row = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if return_assistant_tokens_mask:
                row["assistant_masks"] = [
                    int(any(start < g_end and g_start < end for g_start, g_end in generation_indices[i]))
                    for start, end in spans
                ]
            if truncation and max_length is not None:
                row = {key: values[:max_length] for key, values in row.items()}
            rows.append(row)
        if not return_dict:
            ids = [row["input_ids"] for row in rows]
            if padding or return_tensors:
                padded = self.pad(
                    {"input_ids": ids}, padding=padding, max_length=max_length, return_tensors=return_tensors
                )
                ids = padded["input_ids"]
            return ids if is_batched or return_tensors else ids[0]
        batch = {key: [row[key] for row in rows] for key in rows[0]}
        if padding:
            masks = batch.pop("assistant_masks", None)
            batch = dict(self.pad(batch, padding=padding, max_length=max_length))
            if masks is not None:
                width = len(batch["input_ids"][0])
                fill = [[0] * (width - len(m)) for m in masks]
                left = self.padding_side == "left"
                batch["assistant_masks"] = [f + m if left else m + f for m, f in zip(masks, fill, strict=True)]
        if not is_batched and not return_tensors:
            batch = {key: values[0] for key, values in batch.items()}
        return BatchEncoding(batch, tensor_type=return_tensors)


def _find_tokenizer_file(directory: Path) -> Path | None:
    candidates = sorted(directory.glob("tokenizer.model.v*")) + sorted(directory.glob("*.model.v*"))
    candidates += [directory / "tokenizer.model"] if (directory / "tokenizer.model").is_file() else []
    return candidates[0] if candidates else None


def _extra_added_tokens(directory: Path) -> list[str]:
    """Tokens a fine-tune added on top of the SentencePiece vocabulary (e.g. ChatML's), in id order."""
    added = directory / "added_tokens.json"
    if added.is_file():
        return [token for token, _ in sorted(json.loads(added.read_text()).items(), key=lambda item: item[1])]
    config = directory / "tokenizer_config.json"
    if config.is_file():
        decoder = json.loads(config.read_text()).get("added_tokens_decoder", {})
        return [entry["content"] for _, entry in sorted(decoder.items(), key=lambda item: int(item[0]))]
    return []


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A transformers tokenizer for a Mistral tokenizer file or a checkpoint directory, with its chat template set.

    `path` is a SentencePiece file (`tokenizer.model`, `tokenizer.model.v1`, `*.model.v2`, `tokenizer.model.v3`) or a
    directory holding one (Hugging Face tokenizer files next to it contribute their added tokens, e.g. ChatML's).
    `apply_chat_template(messages)` on the result returns the ids of mistral-common's `encode_chat_completion`.
    A directory with only Hugging Face tokenizer files is loaded with `transformers.AutoTokenizer` and given the
    matching template; tekken.json (Mistral-Nemo and later) is not a format this kit templates.
    """
    path = Path(path)
    if path.name.startswith("tekken") or (
        path.is_dir() and (path / "tekken.json").is_file() and not _find_tokenizer_file(path)
    ):
        raise ValueError(
            f"{path} is a tekken tokenizer (Mistral-Nemo and later models); hf-mistral-kit templates the "
            "SentencePiece tokenizers v1/v2/v3. Load it with transformers' MistralCommonBackend instead."
        )
    directory = path if path.is_dir() else path.parent
    model_file = _find_tokenizer_file(path) if path.is_dir() else path
    if model_file is None:
        if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
            from .templates import apply_chat_template, guess_template

            apply_chat_template(tokenizer, guess_template(tokenizer))
            return tokenizer
        raise FileNotFoundError(
            f"No Mistral tokenizer in {path}: expected tokenizer.model, tokenizer.model.v1/v2/v3 or Hugging Face "
            "tokenizer files (tokenizer.json / tokenizer_config.json)."
        )
    if not model_file.is_file():
        raise FileNotFoundError(f"Tokenizer file {model_file} does not exist.")
    vocab = spm.SentencePieceProcessor(model_file=str(model_file))
    version = sentencepiece_version(model_file, vocab)
    if version not in TEMPLATE_FOR_VERSION:
        raise ValueError(
            f"{model_file.name} is a tokenizer {version} file; hf-mistral-kit templates versions "
            f"{sorted(TEMPLATE_FOR_VERSION)}. Load it with transformers' MistralCommonBackend instead."
        )
    extra = [t for t in _extra_added_tokens(directory) if vocab.piece_to_id(t) == vocab.unk_id() and t != "<unk>"]
    controls = list(V3_CONTROL_TOKENS) if version != "v1" else []
    tokenizer = MistralSentencePieceTokenizer(
        vocab_file=str(model_file),
        legacy=version == "v1",
        extra_special_tokens=controls + extra,
        mistral_version=version,
    )
    tokenizer.chat_template = get_chat_template("chatml" if "<|im_start|>" in extra else TEMPLATE_FOR_VERSION[version])
    return tokenizer
