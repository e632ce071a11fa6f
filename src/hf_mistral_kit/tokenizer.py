"""Mistral tokenizers as real fast transformers tokenizers whose ids equal mistral-common's, token for token.

`load_tokenizer` builds a `tokenizers` pipeline that encodes any text exactly as Mistral's reference encoder does,
wraps it in a transformers `TokenizersBackend` (`is_fast`, offsets, `char_to_token`, `word_ids`, Rust batch speed)
and gives it the kit's exact chat template. Two kinds of files, one class each over a shared base
(`MistralTokenizerBase`: chat encoding, control-token escaping, decoding, saving):

`MistralSentencePieceTokenizer`, for Mistral's SentencePiece files (tokenizer v1, v2, v3, v7; `build_backend`). What a
plain `tokenizers` pipeline cannot do on its own, and how:

- SentencePiece always writes its dummy prefix "▁", also before text that starts with a space; transformers'
  `Metaspace` pre-tokenizer skips it then ("  x" must be "▁▁", "▁x"). The kit's pipeline writes it there too.
- Tokenizer v1 (Mistral-7B v0.1/v0.2, Mixtral-8x7B) gives every text segment between special tokens its own
  prefix (`legacy=True`); v2/v3/v7 only the text at the very start of the input, and templates write the space after
  control tokens themselves (`legacy=False`).
- BPE runs over each whole text segment, as in SentencePiece, with merges ranked by piece score, then id.
- User-defined pieces (`[REFERENCE_DOC_0]` ... of v3) are emitted whole wherever they appear, as SentencePiece does.
  `tokenizers` places the dummy prefix after matching them, so a text that starts with one gets no "▁" before it;
  the kit's class adds it (`tokenizer.json` alone cannot).

`MistralTekkenTokenizer`, for tekken.json (Mistral-Nemo and later: tokenizer v3, v7, v11, v13; `build_tekken_backend`):
tiktoken's byte-level BPE, reproduced exactly - the file's own pre-tokenizer regex, merges ranked by the rank of the
merged token (ties between two pairs cannot arise on a tekken vocabulary: tested on every code point), a whole
pre-token that is in the vocabulary taken as it is (tiktoken's shortcut: `ignore_merges`), the special tokens at ids
0 .. n-1 and the vocabulary after them, and byte-level decoding of each run of text tokens on its own, as
mistral-common decodes.

Text in a conversation that spells a control token (`[INST]`, `</s>`, `<|im_end|>`, ...) stays text: before
rendering, `apply_chat_template` marks every such spelling with a private-use character that the chat encoder's
normalizer removes again (`ControlTokenEscaper`), so the added-token matcher never sees the spelling and the
encoder's pieces come out as if it were plain text. Saved folders load exactly in plain transformers
(`tokenizer.json` + `tokenizer_class: PreTrainedTokenizerFast`), in mistral-common and vLLM's mistral mode
(`tokenizer.model.vN`, `tekken.json`) and in converters that read `tokenizer.model`.
"""

from __future__ import annotations

import copy
import json
import logging
import operator
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

# The tokenizer files mistral-common ships: SentencePiece by the version of Mistral's instruct format they belong to,
# and Mistral-Nemo's tekken.json (instruct format v3; tekken_240911.json, Pixtral-12B's, has the same vocabulary).
REFERENCE_TOKENIZER_FILES = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "v7": "mistral_instruct_tokenizer_241114.model.v7",
    "tekken": "tekken_240718.json",
}

# Which chat template reproduces which tokenizer version. v2 (Mixtral-8x22B's first release) differs from v3 only in
# how tool calls and results are written: it gets the v3 template and refuses conversations with tools.
TEMPLATE_FOR_VERSION = {"v1": "mistral_v1", "v2": "mistral_v3", "v3": "mistral_v3", "v7": "mistral_v7"}
# The same for tekken.json, by its `config.version`: the same rules, without SentencePiece's dummy-prefix spaces.
TEKKEN_TEMPLATE_FOR_VERSION = {
    "v3": "mistral_tekken_v3",
    "v7": "mistral_tekken_v7",
    "v11": "mistral_tekken_v11",
    "v13": "mistral_tekken_v13",
}
TEKKEN_FILE = "tekken.json"
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

# The key of tokenizer_config.json that says the kit saved the folder (and which Mistral tokenizer version it is).
VERSION_KEY = "mistral_version"
# What a saved tokenizer_config.json names: stock transformers (4.x and 5.x) loads tokenizer.json verbatim with it.
SAVED_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# SentencePiece piece types (sentencepiece_model.proto).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_SPACE = "▁"


def reference_tokenizer_file(version: str) -> Path:
    """The real Mistral tokenizer file of `version` shipped inside mistral-common: SentencePiece "v1", "v2", "v3",
    "v7", or "tekken" (Mistral-Nemo's tekken.json, instruct format v3)."""
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
    if "[SYSTEM_PROMPT]" in pieces:
        return "v7"
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
    # Spaces become "▁" in the pre-tokenizer, not in a normalizer: `Metaspace` replaces a character in one pass,
    # where a `Replace` normalizer runs a regex: ~13% of the instructions of an encode (callgrind, v1 and v3).
    # User-defined pieces hold no space, so matching them before or after that replacement is the same.
    spaces = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="never", split=False)
    if legacy:
        if user_defined:
            raise ValueError("A tokenizer v1 with user-defined pieces is not a Mistral tokenizer; it is not supported.")
        # Every segment between added tokens gets the dummy prefix, also one that starts with a space.
        tokenizer.normalizer = normalizers.Prepend(" ")
        tokenizer.pre_tokenizer = spaces
    else:
        # Only the text at offset 0 gets it, also text that starts with a space. `Metaspace` writes its prefix only
        # where the text does not start with its replacement character: after the first step no space is left,
        # so the second one always writes a plain space at offset 0, which the third turns into "▁".
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [spaces, pre_tokenizers.Metaspace(replacement=" ", prepend_scheme="first", split=False), spaces]
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


# --- the exact tekken pipeline -------------------------------------------------------------------------------

# The control tokens mistral-common's instruct tokenizer of each version looks up when it is built (a tekken file of
# that version without them does not load there either).
_TEKKEN_CONTROLS = {
    "v3": (
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
        "[TOOL_CALLS]",
        "[PREFIX]",
        "[SUFFIX]",
    ),
    "v7": ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"),
    "v11": ("[ARGS]", "[CALL_ID]"),
}
_TEKKEN_CONTROLS["v7"] = _TEKKEN_CONTROLS["v3"] + _TEKKEN_CONTROLS["v7"]
_TEKKEN_CONTROLS["v11"] = _TEKKEN_CONTROLS["v7"] + _TEKKEN_CONTROLS["v11"]
_TEKKEN_CONTROLS["v13"] = _TEKKEN_CONTROLS["v11"]
_TEKKEN_FILLER = "<SPECIAL_{}>"  # mistral-common's name for the special ids a file leaves unnamed


def is_tekken_file(path: str | os.PathLike) -> bool:
    """A tekken tokenizer file by its name, as mistral-common tells them (`tekken*.json`, `*tekken*.json`)."""
    name = Path(path).name
    return "tekken" in name and name.endswith(".json")


def read_tekken(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of a tekken.json, checked: `config` (pattern, sizes, `version`), `vocab` in rank order and the
    special tokens (mistral-common's default list for files of v7 and before that have none)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
        config = data["config"]
        vocab = data["vocab"]
        pattern, version = config["pattern"], config["version"]
        num_special = int(config["default_num_special_tokens"])
        inner = int(config["default_vocab_size"]) - num_special
        if not isinstance(pattern, str) or not isinstance(vocab, list) or not 256 <= inner <= len(vocab):
            raise ValueError("its config does not fit its vocab")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a tekken tokenizer file ({type(error).__name__}: {error}).") from error
    if version not in TEKKEN_TEMPLATE_FOR_VERSION:
        raise ValueError(
            f"{path} is a tekken tokenizer of version {version!r}; hf-mistral-kit templates tekken versions "
            f"{', '.join(TEKKEN_TEMPLATE_FOR_VERSION)}. Load it with transformers' MistralCommonBackend instead."
        )
    specials = data.get("special_tokens")
    if specials is None:
        if int(version[1:]) > 7:
            raise ValueError(
                f"{path} is a tekken {version} file without its special_tokens list (mistral-common refuses it too); "
                "use the model's complete tekken.json."
            )
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer

        specials = [dict(token) for token in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    ranks = sorted(int(token["rank"]) for token in specials)
    if ranks != list(range(len(ranks))) or len(ranks) > num_special:
        raise ValueError(f"{path}: the special tokens' ranks must be 0, 1, ... below {num_special}.")
    names = [str(getattr(t["token_str"], "value", t["token_str"])) for t in sorted(specials, key=lambda t: t["rank"])]
    names += [_TEKKEN_FILLER.format(rank) for rank in range(len(names), num_special)]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: two special tokens have the same name.")
    missing = [token for token in _TEKKEN_CONTROLS[version] if token not in names]
    if missing:
        raise ValueError(
            f"{path} is a tekken {version} file without the control tokens {', '.join(missing)} that Mistral's "
            f"{version} format writes (mistral-common refuses it too); use the model's own tekken.json."
        )
    return {
        "pattern": pattern,
        "version": version,
        "specials": names,
        "tokens": tuple(entry["token_bytes"] for entry in vocab[:inner]),
    }


@lru_cache(maxsize=2)
def _tekken_vocabulary(tokens: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """The byte-level strings of a tekken vocabulary (base64 byte strings in rank order) and its BPE merges.

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank; as BPE merges that is
    every split of each token into two tokens, ranked by the token's rank (splits of one token by their parts' ranks).
    """
    import base64

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    pieces = [base64.b64decode(token) for token in tokens]
    if any(pieces[i] != bytes([i]) for i in range(256)):
        raise ValueError("A tekken vocabulary starts with the 256 single bytes in order.")
    ranks = {piece: rank for rank, piece in enumerate(pieces)}
    if len(ranks) != len(pieces):
        raise ValueError("A tekken vocabulary holds each byte string once.")
    chars = bytes_to_unicode()
    strings = ["".join(map(chars.__getitem__, piece)) for piece in pieces]
    merges = []
    for rank, piece in enumerate(pieces):
        splits = []
        for cut in range(1, len(piece)):
            left, right = ranks.get(piece[:cut]), ranks.get(piece[cut:])
            if left is not None and right is not None:
                splits.append((left, right, cut))
        text = strings[rank]
        merges += [(text[:cut], text[cut:]) for *_, cut in sorted(splits)]
    return strings, merges


def build_tekken_backend(tekken: dict[str, Any]) -> Tokenizer:
    """A `tokenizers.Tokenizer` that encodes any text like mistral-common's Tekkenizer (tiktoken) with the contents
    of a tekken file (`read_tekken`): special tokens at ids 0 .. n-1, never matched in text by tiktoken (here they are
    added tokens, as transformers matches them), the vocabulary after them."""
    strings, merges = _tekken_vocabulary(tekken["tokens"])
    specials = tekken["specials"]
    vocab = {string: rank + len(specials) for rank, string in enumerate(strings)}
    clashes = sorted(set(specials) & set(vocab))
    if clashes:
        raise ValueError(f"Special tokens {clashes[:3]} are also spelled by vocabulary entries; not supported.")
    vocab.update({name: rank for rank, name in enumerate(specials)})
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tekken["pattern"]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in specials])
    return tokenizer


# --- control tokens spelled in a conversation ------------------------------------------------------------------

# Inserted after the first character of every control-token spelling found in conversation data; the chat encoder's
# normalizer removes it. A mark followed by _LITERAL stands for a U+E000 of the data itself; a one-character control
# token is written as the mark followed by its code (private-use plane 15).
_MARK = "\ue000"
_LITERAL = "\ue001"
_CODES = 0xF0000
# Where mistral-common encodes two texts separately with no control token between them (v13's open thinking chunk
# and the text after it), the kit's templates write `chunk_break` when the kit renders: an added token of the chat
# encoder that splits the text there and whose id is then dropped. Escaped data never holds it (a mark is only ever
# followed by _LITERAL, a code or a token's second character, and no token holds these private-use characters).
_BREAK = _MARK + "\ue002"


class ControlTokenEscaper:
    """Keeps control-token spellings in conversation data text, for one set of `tokens` (the added tokens).

    `escape` rewrites the strings of the data so that no token is found in them any more (overlapping and
    one-character tokens included); `normalizer` undoes it inside the tokenizer, before anything else, so offsets
    still point into the escaped text; `unescape` undoes it on rendered text.
    """

    def __init__(self, tokens: Iterable[str]):
        tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
        if any(_MARK <= ch <= _BREAK[-1] or ord(ch) >= _CODES for t in tokens for ch in t):
            raise ValueError("Added tokens must not contain U+E000-U+E002 or plane-15 private-use characters.")
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


class MistralTokenizerBase(TokenizersBackend):
    """What the kit's Mistral tokenizers share: exact chat encoding, control-token escaping, decoding, saving.

    Plain calls (`tok(text)`, `encode`, batches, offsets) run the subclass's exact `tokenizers` pipeline;
    `apply_chat_template` validates the conversation as mistral-common does (`hf_mistral_kit.conversation`), keeps
    control-token spellings in it as text, and computes `assistant_masks` from the token offsets. Subclasses say which
    of the kit's templates fits (`kit_template`) and which source files a saved folder carries (`_source_files`).
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, *args: Any, mistral_version: str | None = None, **kwargs: Any):
        backend = kwargs.pop("_backend", None)  # built for this tokenizer alone: used without the base class's copy
        if backend is not None:
            self._tokenizer = backend
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(*args, mistral_version=mistral_version, **kwargs)
        self.mistral_version = mistral_version

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # The backend comes built (`tokenizer_object`) or serialized (`tokenizer_file`): used as it is, never
        # rebuilt from its vocabulary with another pipeline.
        if kwargs.get("tokenizer_object") is not None:
            kwargs.pop("tokenizer_file", None)
            return kwargs
        return super().convert_to_native_format(trust_remote_code=True, **kwargs)

    @property
    def kit_template(self) -> str | None:
        """The name of the kit's template for this tokenizer's version (None when the version is unknown)."""
        return None

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
        backend.add_special_tokens([AddedToken(_BREAK, special=True, normalized=False)])
        backend.encode_special_tokens = False
        backend.no_padding()
        backend.no_truncation()
        return backend

    @cached_property
    def _has_thinking_tokens(self) -> bool:
        """Whether the vocabulary has v13's [THINK] and [/THINK] (a tekken v13 file may come without them)."""
        return {"[THINK]", "[/THINK]"} <= {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}

    def _convert_encoding(
        self,
        encoding: Any,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> tuple[dict[str, Any], list[Any]]:
        """transformers' conversion of one backend encoding, with a short path for what a plain call returns.

        Without padding every attention mask is all ones, so the short path writes it in Python instead of copying the
        backend's, and builds its dict directly (together ~4 of ~9 µs per text). Anything else asked goes to
        transformers.
        """
        if return_token_type_ids is None:  # as transformers resolves them: by the tokenizer's model_input_names
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if (
            return_token_type_ids
            or return_special_tokens_mask
            or return_offsets_mapping
            or return_length
            or (return_overflowing_tokens and encoding.overflowing)
        ):
            return super()._convert_encoding(
                encoding,
                return_token_type_ids=return_token_type_ids,
                return_attention_mask=return_attention_mask,
                return_overflowing_tokens=return_overflowing_tokens,
                return_special_tokens_mask=return_special_tokens_mask,
                return_offsets_mapping=return_offsets_mapping,
                return_length=return_length,
                verbose=verbose,
            )
        ids = encoding.ids
        if not return_attention_mask:
            return {"input_ids": [ids]}, [encoding]
        mask = [1] * len(ids) if self._tokenizer.padding is None else encoding.attention_mask
        return {"input_ids": [ids], "attention_mask": [mask]}, [encoding]

    def _add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        for cached in ("_escaper", "_chat_backend", "_user_defined", "_has_thinking_tokens"):
            self.__dict__.pop(cached, None)
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def _check_template(self, name: str | None) -> None:
        """Refuse a kit template written for the other kind of tokenizer: its ids could never be Mistral's."""
        if name is None or name == "chatml":
            return
        tekken_template = name.startswith("mistral_tekken_")
        if tekken_template != isinstance(self, MistralTekkenTokenizer):
            kind = "tekken" if tekken_template else "SentencePiece"
            ours = "a tekken" if isinstance(self, MistralTekkenTokenizer) else "a SentencePiece"
            raise ValueError(
                f"The chat template {name} is written for Mistral's {kind} tokenizers; this is {ours} tokenizer. "
                f"Use {self.kit_template or 'the template of its version'} "
                "(hf_mistral_kit.apply_chat_template(tokenizer, name) sets one)."
            )

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
        control-token spellings inside the conversation stay text, and the tokenizer is exact.
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
        self._check_template(name)
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
                thinking_tokens=self._has_thinking_tokens,
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
            **{**self.special_tokens_map, **escaper.escape(kwargs), **({"chunk_break": _BREAK} if tokenize else {})},
        )
        if not tokenize:
            texts = [escaper.unescape(text) for text in rendered]
            return texts if is_batched else texts[0]

        backend = self._chat_backend
        # Offsets are only needed for the masks; without them tokenizers encodes faster.
        encode = backend.encode_batch if return_assistant_tokens_mask else backend.encode_batch_fast
        rows, chunk_break = [], backend.token_to_id(_BREAK)
        for i, encoding in enumerate(encode(rendered, add_special_tokens=False)):
            ids, offsets = encoding.ids, encoding.offsets if return_assistant_tokens_mask else None
            if _BREAK in rendered[i]:
                kept = [j for j, token in enumerate(ids) if token != chunk_break]
                ids, offsets = [ids[j] for j in kept], offsets and [offsets[j] for j in kept]
            row = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if return_assistant_tokens_mask:
                row["assistant_masks"] = _overlap_mask(offsets, generation_indices[i])
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

    def _decode_runs(self, token_ids: int | list[int], skip_special_tokens: bool) -> str:
        """Each run of ids between added tokens decoded on its own (as mistral-common decodes), the added tokens
        written as they are (or left out with `skip_special_tokens`, the special ones)."""
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
            if token_id is not None and not (skip_special_tokens and added[token_id].special):
                out.append(added[token_id].content)
        return "".join(out)

    # -- saving ------------------------------------------------------------------------------------------------

    def _saved_config(self) -> dict[str, Any]:
        """Keys a subclass adds to the saved tokenizer_config.json."""
        return {}

    def _source_files(self) -> list[tuple[str, str]]:
        """(source path, name in the saved folder) of the Mistral tokenizer files a saved folder carries."""
        return []

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, push_to_hub: bool = False, **kwargs):
        """`save_pretrained`, writing a folder every consumer reads exactly, with or without the kit.

        Besides `tokenizer.json` and `chat_template.jinja`: `tokenizer_config.json` names `PreTrainedTokenizerFast`
        (stock transformers loads `tokenizer.json` as it is) with `add_bos_token`/`add_eos_token`, and Mistral's own
        tokenizer file (see the subclasses) for mistral-common, vLLM's mistral mode and converters.
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
            **self._saved_config(),
        )
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
        files = tuple(files)
        for source, name in self._source_files():
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


class MistralSentencePieceTokenizer(MistralTokenizerBase):
    """A fast transformers tokenizer over a Mistral SentencePiece model that encodes like mistral-common.

    Plain calls (`tok(text)`, `encode`, batches, offsets) run the exact `tokenizers` pipeline of `build_backend`;
    `apply_chat_template` keeps control-token spellings in the conversation as text, JSON-normalizes tool calls and
    results as mistral-common does and computes `assistant_masks` from the token offsets. `legacy` is True for
    tokenizer v1 (every text segment between special tokens gets a dummy prefix) and False for v2/v3/v7.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}

    def __init__(self, *args: Any, mistral_version: str | None = None, legacy: bool | None = None, **kwargs: Any):
        legacy = mistral_version in (None, "v1") if legacy is None else legacy
        super().__init__(*args, mistral_version=mistral_version, legacy=legacy, **kwargs)
        self.legacy = legacy

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

    @property
    def kit_template(self) -> str | None:
        return TEMPLATE_FOR_VERSION.get(self.mistral_version)

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

    def _any_starts_with_piece(self, texts: list | tuple) -> bool:
        """`_starts_with_piece` for any of `texts` (all strings), in one C-level pass: plain batches pay ~nothing."""
        try:
            return any(map(operator.methodcaller("startswith", self._user_defined), texts))
        except (AttributeError, TypeError):  # not all strings: transformers' own checks report it
            return False

    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, **kwargs: Any) -> BatchEncoding:
        texts = text if isinstance(text, (list, tuple)) else [text]
        if (
            self._user_defined
            and text_pair is None
            and not kwargs.get("is_split_into_words")
            and self._any_starts_with_piece(texts)
        ):
            backend = self._tokenizer
            self._tokenizer = _PrefixBeforePiece(backend, self._starts_with_piece)
            try:
                return super()._encode_plus(text, text_pair, *args, **kwargs)
            finally:
                self._tokenizer = backend
        return super()._encode_plus(text, text_pair, *args, **kwargs)

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
        return self._decode_runs(token_ids, skip_special_tokens=False)

    # -- saving ------------------------------------------------------------------------------------------------

    def _saved_config(self) -> dict[str, Any]:
        if not self.mistral_version:
            return {}
        # Read by llama.cpp's converter (tokenizer.ggml.add_space_prefix), which can give every text fragment after a
        # special token a dummy prefix or none: v1 prefixes every fragment; the v2/v3/v7 templates write the space
        # after control tokens themselves. transformers' own pipeline is in tokenizer.json.
        return {"add_prefix_space": self.legacy}

    def _source_files(self) -> list[tuple[str, str]]:
        """The SentencePiece file twice: as `tokenizer.model.vN` (mistral-common and vLLM's mistral mode read the
        version from that name) and as `tokenizer.model` (for converters such as llama.cpp's)."""
        source = getattr(self, "vocab_file", None)
        if not (self.mistral_version and source and os.path.isfile(source)):
            return []
        return [(source, f"tokenizer.model.{self.mistral_version}"), (source, "tokenizer.model")]


class MistralTekkenTokenizer(MistralTokenizerBase):
    """A fast transformers tokenizer over a Mistral tekken.json (Mistral-Nemo and later) that encodes like
    mistral-common's Tekkenizer: its own pre-tokenizer regex, byte-level BPE, the special tokens at ids 0 .. n-1
    (`<s>` 1, `</s>` 2, `[INST]` 3, ...) and byte-level decoding, each run of text tokens on its own.

    `mistral_version` is the file's `config.version` (v3, v7, v11, v13), which picks the kit's template.
    """

    vocab_files_names = {"vocab_file": TEKKEN_FILE, "tokenizer_file": "tokenizer.json"}

    @classmethod
    def from_tekken(cls, tekken_file: str | os.PathLike, **kwargs: Any) -> MistralTekkenTokenizer:
        """The tokenizer of a tekken file (`tekken.json`, mistral-common's `tekken_240718.json`, ...)."""
        tekken = read_tekken(tekken_file)
        specials = tekken["specials"]
        kwargs = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "extra_special_tokens": [name for name in specials if name not in ("<s>", "</s>", "<unk>")],
            **kwargs,
        }
        backend = build_tekken_backend(tekken)
        return cls(_backend=backend, vocab_file=str(tekken_file), mistral_version=tekken["version"], **kwargs)

    @property
    def kit_template(self) -> str | None:
        return TEKKEN_TEMPLATE_FOR_VERSION.get(self.mistral_version)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        # mistral-common decodes each run of text tokens between special tokens on its own (bytes of a character
        # split by a special token are not joined), whether the special tokens are kept or left out.
        return self._decode_runs(token_ids, skip_special_tokens)

    def _source_files(self) -> list[tuple[str, str]]:
        """tekken.json, under that name (what mistral-common, vLLM's mistral mode and transformers look for), unless
        tokens were added on top of its vocabulary: tekken.json cannot hold them, and a consumer that prefers it
        (transformers' MistralCommonBackend, vLLM's mistral mode) would then silently lose them."""
        source = getattr(self, "vocab_file", None)
        if not (self.mistral_version and source and os.path.isfile(source)):
            return []
        added = len(self) - self._tokenizer.get_vocab_size(with_added_tokens=False)
        if added > 0:
            logger.warning(
                "tekken.json is not saved: it cannot hold the %d token(s) added to this tokenizer, and consumers "
                "that read it (MistralCommonBackend, vLLM's mistral mode) would lose them; tokenizer.json has them.",
                added,
            )
            return []
        return [(source, TEKKEN_FILE)]


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


def find_tekken_file(directory: str | os.PathLike) -> Path | None:
    """The directory's `tekken.json` (the one name mistral-common, vLLM and transformers look for), if any."""
    path = Path(directory) / TEKKEN_FILE
    return path if path.is_file() else None


def find_mistral_tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The directory's Mistral tokenizer file: tekken.json first (as mistral-common picks), else SentencePiece's."""
    return find_tekken_file(directory) or find_tokenizer_file(directory)


def kit_tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The directory's Mistral tokenizer file if it is of a version the kit templates (else None: a tekken v15 file,
    for one, is left to mistral-common)."""
    path = find_mistral_tokenizer_file(directory)
    if path is not None and is_tekken_file(path):
        try:
            version = json.loads(path.read_bytes()).get("config", {}).get("version")
        except (OSError, ValueError, AttributeError):
            return None
        return path if version in TEKKEN_TEMPLATE_FOR_VERSION else None
    return path


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


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> MistralTokenizerBase:
    """The exact fast tokenizer of a Mistral tokenizer file or checkpoint directory, with its chat template set.

    `path` is a SentencePiece file (`tokenizer.model`, `tokenizer.model.v1`, `*.model.v2`, `tokenizer.model.v3`,
    `*.model.v7`), a tekken file (`tekken.json`, mistral-common's `tekken_240718.json`, ...) or a directory holding
    one or a `tokenizer.json` (a folder saved by the kit, or a Hugging Face checkpoint; its added tokens, pad token,
    padding side, ... are kept). `apply_chat_template(messages)` on the result returns the ids of mistral-common's
    `encode_chat_completion`. The kit's template for the tokenizer's version is used, unless the folder was saved by
    the kit with a template of its own. Keyword arguments are tokenizer arguments (`padding_side`, `pad_token`,
    `add_bos_token`, `model_max_length`, ...), as for `from_pretrained`.
    """
    path = Path(path)
    if path.is_file():  # the file, with what its folder adds on top of it (ChatML's tokens, a pad token, ...)
        config = _read_json(path.parent / "tokenizer_config.json")
        tokenizer = _from_mistral_directory(path.parent, path, config, kwargs)
        _set_template(tokenizer, path.parent, config, kwargs)
        return tokenizer
    if not path.is_dir():
        raise FileNotFoundError(f"Tokenizer file {path} does not exist.")
    if not _loadable(path):
        raise FileNotFoundError(
            f"No Mistral tokenizer in {path}: expected tokenizer.model, tokenizer.model.v1/v2/v3/v7, tekken.json or "
            "Hugging Face tokenizer files (tokenizer.json / tokenizer_config.json)."
        )
    config = _read_json(path / "tokenizer_config.json")
    model_file = find_mistral_tokenizer_file(path)
    if model_file is not None:
        tokenizer = _from_mistral_directory(path, model_file, config, kwargs)
    else:
        tokenizer = _from_tokenizer_json(path, config, kwargs)
    _set_template(tokenizer, path, config, kwargs)
    return tokenizer


def _loadable(directory: Path) -> bool:
    return find_mistral_tokenizer_file(directory) is not None or (directory / "tokenizer.json").is_file()


def _from_mistral_file(model_file: Path, kwargs: dict[str, Any]) -> MistralTokenizerBase:
    if is_tekken_file(model_file):
        return MistralTekkenTokenizer.from_tekken(model_file, **_tokenizer_kwargs(kwargs))
    proto = read_sentencepiece(model_file)
    version = sentencepiece_version(model_file, proto)
    if version not in TEMPLATE_FOR_VERSION:
        raise ValueError(
            f"{model_file.name} is a tokenizer {version} file; hf-mistral-kit templates versions "
            f"{sorted(TEMPLATE_FOR_VERSION)}. Load it with transformers' MistralCommonBackend instead."
        )
    return MistralSentencePieceTokenizer.from_sentencepiece(model_file, version, **_tokenizer_kwargs(kwargs))


def _from_mistral_directory(
    directory: Path, model_file: Path, config: dict[str, Any], kwargs: dict[str, Any]
) -> MistralTokenizerBase:
    """The exact pipeline rebuilt from the Mistral tokenizer file, with what the folder adds on top of it."""
    saved = {key: config[key] for key in (*_CONFIG_ATTRIBUTES, *_CONFIG_TOKENS) if key in config}
    saved = {key: _token_content(value) for key, value in saved.items() if value is not None}
    tokenizer = _from_mistral_file(model_file, {**saved, **kwargs})
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


def _is_byte_level(directory: Path) -> bool:
    """Whether the folder's tokenizer.json is a byte-level BPE (a converted tekken.json) rather than SentencePiece's."""
    pre_tokenizer = _read_json(directory / "tokenizer.json").get("pre_tokenizer") or {}
    steps = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if isinstance(pre_tokenizer, dict) else []
    return any(isinstance(step, dict) and step.get("type") == "ByteLevel" for step in steps)


def _from_tokenizer_json(directory: Path, config: dict[str, Any], kwargs: dict[str, Any]):
    """A folder with only tokenizer.json: loaded as it is into the kit class (control tokens spelled in a
    conversation stay text), exact when the kit saved it. A SentencePiece folder with no Mistral version is read as
    tokenizer v1 unless its vocabulary has the v3 (or v7) control tokens; a tekken one keeps its own template."""
    version = config.get(VERSION_KEY)
    if _is_byte_level(directory):
        tokenizer = MistralTekkenTokenizer.from_pretrained(str(directory), **_tokenizer_kwargs(kwargs))
        if version is None:
            logger.warning(
                "%s has no tekken.json: its tokenizer.json is used as it is, and its tekken version (v3, v7, v11 or "
                "v13), which decides Mistral's chat format, is unknown, so the folder's own chat template is kept. "
                "Add the model's tekken.json for the kit's exact template.",
                directory,
            )
        return tokenizer
    tokenizer = MistralSentencePieceTokenizer.from_pretrained(str(directory), **_tokenizer_kwargs(kwargs))
    if version is None:
        vocab = tokenizer.get_vocab()
        if "[INST]" not in vocab:
            version = "v1"
        else:
            version = "v7" if "[SYSTEM_PROMPT]" in vocab else ("v3" if vocab.get("[IMG]") == 10 else "v2")
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
    name = "chatml" if CHATML_TOKENS[0] in vocab else tokenizer.kit_template
    if name is None:  # a tekken tokenizer.json of unknown version (warned about when loaded)
        tokenizer.chat_template = saved
        return
    if saved and saved != get_chat_template(name):
        logger.info("%s: its own chat template is replaced by hf-mistral-kit's exact %s template.", directory, name)
    tokenizer.chat_template = get_chat_template(name)


def _saved_template(directory: Path, config: dict[str, Any]) -> str | None:
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None
