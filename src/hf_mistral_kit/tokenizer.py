"""Mistral tokenizers as real fast transformers tokenizers whose ids equal mistral-common's, token for token.

`load_tokenizer` builds a `tokenizers` pipeline from Mistral's SentencePiece file that encodes any text exactly as
SentencePiece does (`build_backend`), wraps it in a transformers `TokenizersBackend` (`is_fast`, offsets,
`char_to_token`, `word_ids`, Rust batch speed) and gives it the kit's exact chat template. What a plain
`tokenizers` pipeline cannot do on its own, and how:

- SentencePiece always writes its dummy prefix "▁", also before text that starts with a space; transformers'
  `Metaspace` pre-tokenizer skips it then ("  x" must be "▁▁", "▁x"). The kit's pipeline writes it there too.
- Tokenizer v1 (Mistral-7B v0.1/v0.2, Mixtral-8x7B) gives every text segment between special tokens its own
  prefix (`legacy=True`); v2/v3 only the text at the very start of the input, and templates write the space after
  control tokens themselves (`legacy=False`).
- BPE runs over each whole text segment, as in SentencePiece, with merges ranked by piece score, then id.
- User-defined pieces (`[REFERENCE_DOC_0]` ... of v3) are emitted whole wherever they appear, as SentencePiece does.
  `tokenizers` places the dummy prefix after matching them, so a text that starts with one gets no "▁" before it;
  the kit's class adds it (`tokenizer.json` alone cannot).

Text in a conversation that spells a control token (`[INST]`, `</s>`, `<|im_end|>`, ...) stays text: before
rendering, `apply_chat_template` marks every such spelling with a private-use character that the chat encoder's
normalizer removes again (`ControlTokenEscaper`), so the added-token matcher never sees the spelling and
SentencePiece's pieces come out as if it were plain text. Saved folders load exactly in plain transformers
(`tokenizer.json` + `tokenizer_class: PreTrainedTokenizerFast`), in mistral-common and vLLM's mistral mode
(`tokenizer.model.vN`) and in converters that read `tokenizer.model`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import mistral_common
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import BatchEncoding
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.chat_template_utils import render_jinja_template

from .conversation import prepare_chat
from .templates import get_chat_template, list_templates, template_name

logger = logging.getLogger(__name__)

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
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

# The key of tokenizer_config.json that says the kit saved the folder (and which Mistral tokenizer version it is).
VERSION_KEY = "mistral_version"
# What a saved tokenizer_config.json names: stock transformers (4.x and 5.x) loads tokenizer.json verbatim with it.
SAVED_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# SentencePiece piece types (sentencepiece_model.proto).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_SPACE = "▁"


def reference_tokenizer_file(version: str) -> Path:
    """The real Mistral tokenizer file of `version` ("v1", "v2", "v3") shipped inside mistral-common."""
    if version not in REFERENCE_TOKENIZER_FILES:
        raise ValueError(f"Unknown tokenizer version {version!r}; expected one of {sorted(REFERENCE_TOKENIZER_FILES)}.")
    return MISTRAL_COMMON_DATA / REFERENCE_TOKENIZER_FILES[version]


def read_sentencepiece(model_file: str | os.PathLike) -> Any:
    """The `ModelProto` of a SentencePiece file."""
    from sentencepiece import sentencepiece_model_pb2

    try:
        return sentencepiece_model_pb2.ModelProto.FromString(Path(model_file).read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{model_file} is not a SentencePiece model ({error}).") from error


def sentencepiece_version(model_file: str | os.PathLike, proto: Any) -> str:
    """The instruct-format version of a Mistral SentencePiece file: from its suffix, else from its vocabulary."""
    match = re.search(r"\.model\.(v\d+)", Path(model_file).name)
    if match:
        return match.group(1)
    pieces = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    if len(proto.pieces) <= 32000 or "[INST]" not in pieces:
        return "v1"
    return "v3" if pieces.get("[IMG]") == 10 else "v2"


# --- the exact tokenizers pipeline ----------------------------------------------------------------------------


def _merges(proto: Any) -> list[tuple[str, str]]:
    """BPE merges in SentencePiece's order: by the score of the merged piece, then by its id.

    The whitespace-only pieces (`▁▁`, `▁▁▁▁`, ...) all score the same and SentencePiece breaks that tie by position;
    ranking them by id reproduces its result on runs of "▁" of every length (the tests check runs up to 260).
    """
    normal = {piece.piece: (piece.score, i) for i, piece in enumerate(proto.pieces) if piece.type == _NORMAL}
    ranked = []
    for token, (score, index) in normal.items():
        for split in range(1, len(token)):
            left, right = token[:split], token[split:]
            if left in normal and right in normal:
                ranked.append((-score, index, left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


def build_backend(proto: Any, legacy: bool) -> Tokenizer:
    """A `tokenizers.Tokenizer` that encodes any text like SentencePiece with `proto` (a Mistral BPE model).

    `legacy=True` gives every text segment between added tokens SentencePiece's dummy prefix (tokenizer v1);
    `legacy=False` only the segment at the very start of the input (v2/v3). Control pieces (`<s>`, `[INST]`, ...)
    are special added tokens, user-defined pieces are added tokens matched wherever SentencePiece matches them.
    """
    spec = proto.normalizer_spec
    if proto.trainer_spec.model_type != 2 or not proto.trainer_spec.byte_fallback:
        raise ValueError("Only BPE SentencePiece models with byte fallback (Mistral's) are supported.")
    if spec.precompiled_charsmap or spec.remove_extra_whitespaces or not spec.add_dummy_prefix:
        raise ValueError("This SentencePiece model normalizes text differently from Mistral's; it is not supported.")
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=_merges(proto), unk_token=unk, fuse_unk=True, byte_fallback=True))

    user_defined = [piece.piece for piece in proto.pieces if piece.type == _USER_DEFINED]
    if legacy:
        if user_defined:
            raise ValueError("A tokenizer v1 with user-defined pieces is not a Mistral tokenizer; it is not supported.")
        # Every segment between added tokens gets the dummy prefix, also one that starts with a space.
        tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(" ", _SPACE), normalizers.Prepend(_SPACE)])
    else:
        # Only the text at offset 0 gets it. `Metaspace` checks whether the text already starts with its replacement
        # character, so it writes a plain space there (no other space is left by then), which becomes "▁" next.
        tokenizer.normalizer = normalizers.Replace(" ", _SPACE)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement=" ", prepend_scheme="first", split=False),
                pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="never", split=False),
            ]
        )
    # No split into words: SentencePiece runs BPE over each whole text segment, and so does this.
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(
        [AddedToken(p.piece, special=True, normalized=False) for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL)]
    )
    if user_defined:
        tokenizer.add_tokens([AddedToken(piece, special=False, normalized=True) for piece in user_defined])
    return tokenizer


@lru_cache(maxsize=8)
def _serialized_backend(proto_bytes: bytes, legacy: bool) -> str:
    """`build_backend` as tokenizer.json text, cached: tests and notebooks load the same files again and again."""
    from sentencepiece import sentencepiece_model_pb2

    return build_backend(sentencepiece_model_pb2.ModelProto.FromString(proto_bytes), legacy).to_str()


# --- control tokens spelled in a conversation ------------------------------------------------------------------

# Inserted after the first character of every control-token spelling found in conversation data; the chat encoder's
# normalizer removes it. A mark followed by _LITERAL stands for a U+E000 of the data itself; a one-character control
# token is written as the mark followed by its code (private-use plane 15).
_MARK = "\ue000"
_LITERAL = "\ue001"
_CODES = 0xF0000


class ControlTokenEscaper:
    """Keeps control-token spellings in conversation data text, for one set of `tokens` (the added tokens).

    `escape` rewrites the strings of the data so that no token is found in them any more (overlapping and
    one-character tokens included); `normalizer` undoes it inside the tokenizer, before anything else, so offsets
    still point into the escaped text; `unescape` undoes it on rendered text.
    """

    def __init__(self, tokens: Iterable[str]):
        tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
        if any(_MARK <= ch <= _LITERAL or ord(ch) >= _CODES for t in tokens for ch in t):
            raise ValueError("Added tokens must not contain U+E000, U+E001 or plane-15 private-use characters.")
        self.singles = {t: chr(_CODES + i) for i, t in enumerate(t for t in tokens if len(t) == 1)}
        self._decoded = {_LITERAL: _MARK, **{code: t for t, code in self.singles.items()}}
        self._starts = re.compile(f"(?=(?:{_trie_pattern(tokens)}))") if tokens else None
        # Most text holds none of the characters tokens start with: one scan decides that.
        self._first_chars = re.compile(f"[{''.join(sorted({re.escape(t[0]) for t in tokens}))}]") if tokens else None

    def escape(self, value: Any) -> Any:
        """`value` with every string in it (dict keys included) escaped; other values returned as they are.

        Iterative, so that data nested as deeply as the conversation contract admits never hits the recursion limit.
        """
        if isinstance(value, str):
            return self.escape_text(value)
        if not isinstance(value, (Mapping, list, tuple)):
            return value
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (source, parent container, key in the parent)
        while stack:
            source, parent, key = stack.pop()
            if isinstance(source, str):
                parent[key] = self.escape_text(source)
            elif isinstance(source, Mapping):
                escaped = parent[key] = {}
                for item_key, item in source.items():
                    item_key = self.escape_text(item_key) if isinstance(item_key, str) else item_key
                    escaped[item_key] = None
                    stack.append((item, escaped, item_key))
            elif isinstance(source, (list, tuple)):
                escaped = parent[key] = [None] * len(source)
                stack.extend((item, escaped, index) for index, item in enumerate(source))
            else:
                parent[key] = source
        return root[0]

    def escape_text(self, text: str) -> str:
        if _MARK in text:
            text = text.replace(_MARK, _MARK + _LITERAL)
        if self._starts is None or not self._first_chars.search(text):
            return text
        starts = [m.start() for m in self._starts.finditer(text)]
        if not starts:
            return text
        out, last = [], 0
        for start in starts:
            char = text[start]
            out.append(text[last:start])
            out.append(_MARK + self.singles[char] if char in self.singles else char + _MARK)
            last = start + 1
        out.append(text[last:])
        return "".join(out)

    def unescape(self, text: str) -> str:
        """`escape` undone, as `normalizer` undoes it: a mark stands for a U+E000 before _LITERAL, for a
        one-character token before its code, and for nothing otherwise (the character after it is not part of it)."""
        if _MARK not in text:
            return text
        return self._marks.sub(lambda match: self._decoded.get(match.group(1), ""), text)

    @cached_property
    def _marks(self) -> re.Pattern:
        return re.compile(f"{_MARK}([{_LITERAL}{''.join(self._decoded)}])?")

    def normalizer(self) -> Any:
        """Normalizer steps that undo `escape`, to run before the tokenizer's own normalizer."""
        steps = [normalizers.Replace(_MARK + code, token) for token, code in self.singles.items()]
        steps.append(normalizers.Replace(Regex(f"{_MARK}(?!{_LITERAL})"), ""))
        steps.append(normalizers.Replace(_MARK + _LITERAL, _MARK))
        return steps


def _trie_pattern(strings: list[str]) -> str:
    """A regex matching any of `strings`, factored by common prefixes (hundreds of control tokens stay fast)."""
    trie: dict = {}
    for string in strings:
        node = trie
        for char in string:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if ends and branches else body

    return pattern(trie)


# --- the transformers tokenizer ---------------------------------------------------------------------------------


class MistralSentencePieceTokenizer(TokenizersBackend):
    """A fast transformers tokenizer over a Mistral SentencePiece model that encodes like mistral-common.

    Plain calls (`tok(text)`, `encode`, batches, offsets) run the exact `tokenizers` pipeline of `build_backend`;
    `apply_chat_template` keeps control-token spellings in the conversation as text, JSON-normalizes tool calls and
    results as mistral-common does and computes `assistant_masks` from the token offsets. `legacy` is True for
    tokenizer v1 (every text segment between special tokens gets a dummy prefix) and False for v2/v3.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, *args: Any, mistral_version: str | None = None, legacy: bool | None = None, **kwargs: Any):
        backend = kwargs.pop("_backend", None)  # built for this tokenizer alone: used without the base class's copy
        if backend is not None:
            self._tokenizer = backend
        legacy = mistral_version in (None, "v1") if legacy is None else legacy
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(*args, mistral_version=mistral_version, legacy=legacy, **kwargs)
        self.mistral_version = mistral_version
        self.legacy = legacy

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # The backend comes built (`tokenizer_object`) or serialized (`tokenizer_file`): used as it is, never
        # rebuilt from its vocabulary with another pipeline.
        if kwargs.get("tokenizer_object") is not None:
            kwargs.pop("tokenizer_file", None)
            return kwargs
        return super().convert_to_native_format(trust_remote_code=True, **kwargs)

    @classmethod
    def from_sentencepiece(
        cls, model_file: str | os.PathLike, version: str | None = None, **kwargs: Any
    ) -> MistralSentencePieceTokenizer:
        """The tokenizer of a Mistral SentencePiece file (`version` read from its name or vocabulary if omitted)."""
        proto = read_sentencepiece(model_file)
        version = version or sentencepiece_version(model_file, proto)
        legacy = version == "v1"
        controls = [p.piece for p in proto.pieces if p.type == _CONTROL and p.piece not in ("<s>", "</s>")]
        kwargs = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": proto.pieces[proto.trainer_spec.unk_id].piece,
            "add_bos_token": True,
            "add_eos_token": False,
            "extra_special_tokens": controls,
            **kwargs,
        }
        backend = Tokenizer.from_str(_serialized_backend(proto.SerializeToString(), legacy))
        return cls(_backend=backend, vocab_file=str(model_file), mistral_version=version, legacy=legacy, **kwargs)

    # -- the one text tokenizer.json cannot get right -------------------------------------------------------------

    @cached_property
    def _user_defined(self) -> tuple[str, ...]:
        """The user-defined pieces: normalized added tokens (`build_backend`)."""
        return tuple(t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.normalized)

    def _starts_with_piece(self, text: str) -> bool:
        """Whether `text` starts with a user-defined piece: SentencePiece writes its dummy prefix before the piece,
        but `tokenizers` matches added tokens before it places the prefix, so it writes none. Only the kit's class
        corrects this (see `_PrefixBeforePiece`)."""
        return bool(self._user_defined) and text.startswith(self._user_defined)

    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, **kwargs: Any) -> BatchEncoding:
        texts = text if isinstance(text, (list, tuple)) else [text]
        if (
            self._user_defined
            and text_pair is None
            and not kwargs.get("is_split_into_words")
            and all(isinstance(t, str) for t in texts)
            and any(self._starts_with_piece(t) for t in texts)
        ):
            backend = self._tokenizer
            self._tokenizer = _PrefixBeforePiece(backend, self._starts_with_piece)
            try:
                return super()._encode_plus(text, text_pair, *args, **kwargs)
            finally:
                self._tokenizer = backend
        return super()._encode_plus(text, text_pair, *args, **kwargs)

    # -- chat encoding -----------------------------------------------------------------------------------------

    @cached_property
    def _escaper(self) -> ControlTokenEscaper:
        user_defined = {t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.normalized}
        return ControlTokenEscaper(set(self.get_added_vocab()) - user_defined)

    @cached_property
    def _chat_backend(self) -> Tokenizer:
        """The backend with `_escaper`'s unescaping in front of its normalizer (used by `apply_chat_template`)."""
        backend = copy.deepcopy(self._tokenizer)
        own = backend.normalizer
        backend.normalizer = normalizers.Sequence([*self._escaper.normalizer(), *([own] if own else [])])
        backend.encode_special_tokens = False
        backend.no_padding()
        backend.no_truncation()
        return backend

    def _add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        for cached in ("_escaper", "_chat_backend", "_user_defined"):
            self.__dict__.pop(cached, None)
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
        control-token spellings inside the conversation stay text, and the tokenizer is SentencePiece-exact.
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
                version=self.mistral_version,
                mode=mode,
                continue_final_message=continue_final_message,
                add_generation_prompt=add_generation_prompt,
            )
            for chat in conversations
        ]
        escaper = self._escaper
        rendered, generation_indices = render_jinja_template(
            conversations=[escaper.escape(chat.messages) for chat in chats],
            tools=escaper.escape(chats[0].tools),
            documents=escaper.escape(chats[0].documents),
            chat_template=template,
            continue_final_message=continue_final_message and name is None,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **escaper.escape(kwargs)},
        )
        if not tokenize:
            texts = [escaper.unescape(text) for text in rendered]
            return texts if is_batched else texts[0]

        backend = self._chat_backend
        # Offsets are only needed for the masks; without them tokenizers encodes faster.
        encode = backend.encode_batch if return_assistant_tokens_mask else backend.encode_batch_fast
        rows = []
        for i, encoding in enumerate(encode(rendered, add_special_tokens=False)):
            row = {"input_ids": encoding.ids, "attention_mask": [1] * len(encoding.ids)}
            if return_assistant_tokens_mask:
                row["assistant_masks"] = _overlap_mask(encoding.offsets, generation_indices[i])
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

    # -- decoding ----------------------------------------------------------------------------------------------

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        # v1 gives every text run between special tokens its own dummy prefix: each run decodes on its own, so that
        # decoding a rendered v1 conversation gives back its text ("<s>[INST] ..." rather than "<s> [INST] ...").
        if skip_special_tokens or not self.legacy:
            return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        added = self._tokenizer.get_added_tokens_decoder()
        out: list[str] = []
        run: list[int] = []
        for token_id in [*ids, None]:
            if token_id is not None and token_id not in added:
                run.append(token_id)
                continue
            if run:
                out.append(self._tokenizer.decode(run, skip_special_tokens=False))
                run = []
            if token_id is not None:
                out.append(added[token_id].content)
        return "".join(out)

    # -- saving ------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, push_to_hub: bool = False, **kwargs):
        """`save_pretrained`, writing a folder every consumer reads exactly, with or without the kit.

        Besides `tokenizer.json` and `chat_template.jinja`: `tokenizer_config.json` names `PreTrainedTokenizerFast`
        (stock transformers loads `tokenizer.json` as it is) with `add_bos_token`/`add_eos_token` (and
        `add_prefix_space`, which tells llama.cpp's converter where Mistral writes dummy prefixes), and the
        SentencePiece file is written twice, as `tokenizer.model.vN` (mistral-common and vLLM's mistral mode read
        the version from that name) and as `tokenizer.model` (for converters such as llama.cpp's).
        """
        hub_kwargs = {}
        if push_to_hub:
            hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "repo_id", "token", "private") if k in kwargs}
            files_timestamps = self._get_files_timestamps(save_directory) if os.path.isdir(save_directory) else {}
        files = super().save_pretrained(save_directory, *args, **kwargs)
        directory = Path(save_directory)
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.update(
            tokenizer_class=SAVED_TOKENIZER_CLASS,
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
            padding_side=self.padding_side,
        )
        if self.mistral_version:
            # Read by llama.cpp's converter (tokenizer.ggml.add_space_prefix), which can give every text fragment
            # after a special token a dummy prefix or none: v1 prefixes every fragment; the v2/v3 templates write
            # the space after control tokens themselves. transformers' own pipeline is in tokenizer.json.
            config["add_prefix_space"] = self.legacy
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
        files = tuple(files)
        source = getattr(self, "vocab_file", None)
        if self.mistral_version and source and os.path.isfile(source):
            for name in (f"tokenizer.model.{self.mistral_version}", "tokenizer.model"):
                if not (directory / name).exists() or not os.path.samefile(source, directory / name):
                    shutil.copyfile(source, directory / name)
                files += (str(directory / name),)
        if push_to_hub:
            from huggingface_hub import create_repo

            repo_id = hub_kwargs.pop("repo_id", directory.name)
            repo_id = create_repo(repo_id, exist_ok=True, token=hub_kwargs.get("token")).repo_id
            self._upload_modified_files(
                str(directory),
                repo_id,
                files_timestamps,
                commit_message=hub_kwargs.get("commit_message"),
                token=hub_kwargs.get("token"),
            )
        return files


def _overlap_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap one of the (sorted, disjoint) `spans`, in one pass over both."""
    mask, span = [], 0
    spans = sorted(spans)
    for start, end in offsets:
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        mask.append(int(span < len(spans) and start < end and spans[span][0] < end))
    return mask


class _PrefixBeforePiece:
    """The backend for one `_encode_plus` call with texts that start with a user-defined piece: those get
    SentencePiece's dummy prefix token before the piece; everything else passes through."""

    def __init__(self, backend: Tokenizer, affected: Any):
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_affected", affected)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)

    def encode_batch(self, inputs: list[str], add_special_tokens: bool = True, is_pretokenized: bool = False):
        from tokenizers import Encoding

        backend = self._backend
        padding, truncation = backend.padding, backend.truncation
        backend.no_padding()
        backend.no_truncation()
        try:
            raw = backend.encode_batch(inputs, add_special_tokens=False)
            prefix = backend.encode("\n", add_special_tokens=False)  # "▁" then the newline's byte
            prefix.truncate(1)
        finally:
            if padding:
                backend.enable_padding(**padding)
            if truncation:
                backend.enable_truncation(**truncation)
        fixed = [
            Encoding.merge([prefix, encoding], growing_offsets=False) if self._affected(text) else encoding
            for text, encoding in zip(inputs, raw, strict=True)
        ]
        encodings = [backend.post_process(encoding, None, add_special_tokens) for encoding in fixed]
        if padding and padding.get("length") is None and encodings:
            width = max(len(encoding) for encoding in encodings)
            multiple = padding.get("pad_to_multiple_of")
            if multiple:
                width = -(-width // multiple) * multiple
            for encoding in encodings:
                encoding.pad(
                    width,
                    direction=padding["direction"],
                    pad_id=padding["pad_id"],
                    pad_type_id=padding["pad_type_id"],
                    pad_token=padding["pad_token"],
                )
        return encodings


# --- loading ----------------------------------------------------------------------------------------------------

_VERSIONED = re.compile(r"^(?:tokenizer|.*)\.model\.(v\d+)\w*$")


def find_tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The Mistral SentencePiece file of a directory: a versioned one (`tokenizer.model.v3`, ...) first."""
    directory = Path(directory)
    candidates = sorted(p for p in directory.glob("*.model.v*") if p.is_file() and _VERSIONED.match(p.name))
    candidates += [directory / "tokenizer.model"] if (directory / "tokenizer.model").is_file() else []
    return candidates[0] if candidates else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path}: {error}.") from error
    return value if isinstance(value, dict) else {}


def _extra_added_tokens(directory: Path, vocab_size: int) -> list[dict[str, Any]]:
    """Tokens a fine-tune added on top of the SentencePiece vocabulary (ChatML's, a new pad token, ...), in id order:
    from tokenizer.json, tokenizer_config.json's `added_tokens_decoder` and added_tokens.json, which must agree."""
    sources = [(int(token["id"]), token) for token in _read_json(directory / "tokenizer.json").get("added_tokens", [])]
    decoder = _read_json(directory / "tokenizer_config.json").get("added_tokens_decoder", {})
    sources += [(int(index), token) for index, token in decoder.items() if isinstance(token, dict)]
    sources += [
        (int(index), {"content": content, "special": True})
        for content, index in _read_json(directory / "added_tokens.json").items()
    ]
    entries: dict[int, dict[str, Any]] = {}
    for index, token in sources:
        if index < vocab_size:
            continue
        known = entries.setdefault(index, token)
        if known["content"] != token["content"]:
            raise ValueError(
                f"{directory}: the tokenizer files disagree about added token {index} ({known['content']!r} or "
                f"{token['content']!r}); keep the right one in tokenizer.json and remove the others."
            )
    if sorted(entries) != list(range(vocab_size, vocab_size + len(entries))):
        raise ValueError(
            f"{directory}: added token ids {sorted(entries)} do not follow the SentencePiece vocabulary "
            f"({vocab_size} pieces) without gaps; re-save the tokenizer with the kit."
        )
    return [entries[index] for index in sorted(entries)]


_CONFIG_ATTRIBUTES = ("padding_side", "truncation_side", "model_max_length", "add_bos_token", "add_eos_token")
_CONFIG_TOKENS = ("pad_token", "unk_token", "bos_token", "eos_token")


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> MistralSentencePieceTokenizer:
    """The exact fast tokenizer of a Mistral tokenizer file or checkpoint directory, with its chat template set.

    `path` is a SentencePiece file (`tokenizer.model`, `tokenizer.model.v1`, `*.model.v2`, `tokenizer.model.v3`) or a
    directory holding one or a `tokenizer.json` (a folder saved by the kit, or a Hugging Face checkpoint; its added
    tokens, pad token, padding side, ... are kept). `apply_chat_template(messages)` on the result returns the ids of
    mistral-common's `encode_chat_completion`. The kit's template for the tokenizer's version is used, unless the
    folder was saved by the kit with a template of its own. Keyword arguments are tokenizer arguments
    (`padding_side`, `pad_token`, `add_bos_token`, `model_max_length`, ...), as for `from_pretrained`.
    tekken.json (Mistral-Nemo and later) is not a format this kit templates.
    """
    path = Path(path)
    if path.name.startswith("tekken") or (path.is_dir() and (path / "tekken.json").is_file() and not _loadable(path)):
        raise ValueError(
            f"{path} is a tekken tokenizer (Mistral-Nemo and later models); hf-mistral-kit templates the "
            "SentencePiece tokenizers v1/v2/v3. Load it with transformers' MistralCommonBackend instead."
        )
    if path.is_file():  # the file, with what its folder adds on top of it (ChatML's tokens, a pad token, ...)
        config = _read_json(path.parent / "tokenizer_config.json")
        tokenizer = _from_sentencepiece_directory(path.parent, path, config, kwargs)
        _set_template(tokenizer, path.parent, config, kwargs)
        return tokenizer
    if not path.is_dir():
        raise FileNotFoundError(f"Tokenizer file {path} does not exist.")
    if not _loadable(path):
        raise FileNotFoundError(
            f"No Mistral tokenizer in {path}: expected tokenizer.model, tokenizer.model.v1/v2/v3 or Hugging Face "
            "tokenizer files (tokenizer.json / tokenizer_config.json)."
        )
    config = _read_json(path / "tokenizer_config.json")
    model_file = find_tokenizer_file(path)
    if model_file is not None:
        tokenizer = _from_sentencepiece_directory(path, model_file, config, kwargs)
    else:
        tokenizer = _from_tokenizer_json(path, config, kwargs)
    _set_template(tokenizer, path, config, kwargs)
    return tokenizer


def _loadable(directory: Path) -> bool:
    return find_tokenizer_file(directory) is not None or (directory / "tokenizer.json").is_file()


def _from_sentencepiece_file(model_file: Path, kwargs: dict[str, Any]) -> MistralSentencePieceTokenizer:
    proto = read_sentencepiece(model_file)
    version = sentencepiece_version(model_file, proto)
    if version not in TEMPLATE_FOR_VERSION:
        raise ValueError(
            f"{model_file.name} is a tokenizer {version} file; hf-mistral-kit templates versions "
            f"{sorted(TEMPLATE_FOR_VERSION)}. Load it with transformers' MistralCommonBackend instead."
        )
    return MistralSentencePieceTokenizer.from_sentencepiece(model_file, version, **_tokenizer_kwargs(kwargs))


def _from_sentencepiece_directory(
    directory: Path, model_file: Path, config: dict[str, Any], kwargs: dict[str, Any]
) -> MistralSentencePieceTokenizer:
    """The exact pipeline rebuilt from the SentencePiece file, with what the folder adds on top of it."""
    saved = {key: config[key] for key in (*_CONFIG_ATTRIBUTES, *_CONFIG_TOKENS) if key in config}
    saved = {key: _token_content(value) for key, value in saved.items() if value is not None}
    tokenizer = _from_sentencepiece_file(model_file, {**saved, **kwargs})
    extra = _extra_added_tokens(directory, tokenizer._tokenizer.get_vocab_size(with_added_tokens=False))
    extra = [token for token in extra if token["content"] not in tokenizer.get_vocab()]
    for token in extra:
        added = AddedToken(
            token["content"],
            special=bool(token.get("special", True)),
            normalized=bool(token.get("normalized", False)),
            lstrip=bool(token.get("lstrip", False)),
            rstrip=bool(token.get("rstrip", False)),
            single_word=bool(token.get("single_word", False)),
        )
        tokenizer.add_tokens([added], special_tokens=added.special)
    for key in _CONFIG_TOKENS:
        value = kwargs.get(key, saved.get(key))
        if value is not None and getattr(tokenizer, key) != value:
            setattr(tokenizer, key, value)
    tokenizer.name_or_path = str(directory)
    return tokenizer


def _from_tokenizer_json(directory: Path, config: dict[str, Any], kwargs: dict[str, Any]):
    """A folder with only tokenizer.json: loaded as it is into the kit class (control tokens spelled in a
    conversation stay text), exact when the kit saved it; a folder with no Mistral version is read as tokenizer v1
    unless its vocabulary has the v3 control tokens."""
    version = config.get(VERSION_KEY)
    tokenizer = MistralSentencePieceTokenizer.from_pretrained(str(directory), **_tokenizer_kwargs(kwargs))
    if version is None:
        vocab = tokenizer.get_vocab()
        version = "v1" if "[INST]" not in vocab else ("v3" if vocab.get("[IMG]") == 10 else "v2")
        tokenizer.mistral_version, tokenizer.legacy = version, version == "v1"
        tokenizer.init_kwargs.update(mistral_version=version, legacy=version == "v1")
        logger.warning(
            "%s has no SentencePiece file (tokenizer.model.vN): its tokenizer.json is used as it is, and ids "
            "may differ from mistral-common's where its pipeline differs from SentencePiece's.",
            directory,
        )
    return tokenizer


def _token_content(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def _tokenizer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key not in _IGNORED_KWARGS}


# Arguments `from_pretrained` callers pass that only matter for downloads or for picking a transformers class.
_IGNORED_KWARGS = {
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "use_fast",
    "trust_remote_code",
    "_from_auto",
    "_commit_hash",
    "chat_template",
}


def _set_template(tokenizer: Any, directory: Path, config: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """The kit's template for the tokenizer's version (ChatML where the vocabulary has its tokens), unless the
    caller passes one or the kit saved this folder with a template of its own (kept, with a warning when it is not
    one of the kit's verified templates)."""
    if kwargs.get("chat_template") is not None:
        tokenizer.chat_template = kwargs["chat_template"]
        return
    saved = _saved_template(directory, config)
    if VERSION_KEY in config and saved:
        tokenizer.chat_template = saved
        if saved not in {get_chat_template(name) for name in list_templates()}:
            logger.warning(
                "%s carries a chat template that is not one of hf-mistral-kit's verified templates; it is kept as "
                "it is (ids may differ from mistral-common's). hf_mistral_kit.apply_chat_template(tokenizer, name) "
                "sets a verified one.",
                directory,
            )
        return
    vocab = tokenizer.get_vocab()
    name = "chatml" if CHATML_TOKENS[0] in vocab else TEMPLATE_FOR_VERSION.get(tokenizer.mistral_version, "mistral_v1")
    if saved and saved != get_chat_template(name):
        logger.info("%s: its own chat template is replaced by hf-mistral-kit's exact %s template.", directory, name)
    tokenizer.chat_template = get_chat_template(name)


def _saved_template(directory: Path, config: dict[str, Any]) -> str | None:
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None
