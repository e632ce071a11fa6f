"""Mistral's SentencePiece files (tokenizer v1, v2, v3, v7) as an exact `tokenizers` pipeline and tokenizer class.

`build_backend` builds a `tokenizers` pipeline that encodes any text exactly as SentencePiece does with Mistral's
model. What a plain `tokenizers` pipeline cannot do on its own, and how:

- SentencePiece always writes its dummy prefix "▁", also before text that starts with a space; transformers'
  `Metaspace` pre-tokenizer skips it then ("  x" must be "▁▁", "▁x"). The kit's pipeline writes it there too.
- Tokenizer v1 (Mistral-7B v0.1/v0.2, Mixtral-8x7B) gives every text segment between special tokens its own
  prefix (`legacy=True`); v2/v3/v7 only the text at the very start of the input, and templates write the space after
  control tokens themselves (`legacy=False`). Which rule a version follows is `hf_mistral_kit.versions`' table.
- BPE runs over each whole text segment, as in SentencePiece, with merges ranked by piece score, then id.
- User-defined pieces (`[REFERENCE_DOC_0]` ... of v3) are emitted whole wherever they appear, as SentencePiece does.
  `tokenizers` places the dummy prefix after matching them, so a text that starts with one gets no "▁" before it;
  the kit's class adds it (`tokenizer.json` alone cannot).
"""

from __future__ import annotations

import operator
import os
import re
from enum import IntEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import BatchEncoding

from ..versions import TokenizerKind, find_format, sentencepiece_version
from .base import MistralTokenizerBase
from .errors import TokenizerFileError


class PieceType(IntEnum):
    """SentencePiece's piece types (`sentencepiece_model.proto`), which GGUF's token types are too."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_SPACE = "▁"
# A SentencePiece file named for its version: tokenizer.model.v3, mistral_instruct_tokenizer_241114.model.v7m1, ...
VERSIONED_FILE = re.compile(r"^(?:tokenizer|.*)\.model\.(v\d+)\w*$")


def prefix_every_segment(version: str | None) -> bool:
    """Whether a tokenizer of `version` gives every text segment its dummy prefix (`legacy`): the version's row says;
    without a version, as tokenizer v1 (the first Mistral tokenizers have no version in their name)."""
    row = find_format(version, TokenizerKind.sentencepiece)
    return row.prefix_every_segment if row is not None else version is None


def read_sentencepiece(model_file: str | os.PathLike) -> Any:
    """The `ModelProto` of a SentencePiece file."""
    from sentencepiece import sentencepiece_model_pb2

    try:
        return sentencepiece_model_pb2.ModelProto.FromString(Path(model_file).read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise TokenizerFileError(f"{model_file} is not a SentencePiece model ({error}).") from error


def file_version(model_file: str | os.PathLike, proto: Any) -> str:
    """The instruct-format version of a Mistral SentencePiece file: from its name, else from its vocabulary."""
    match = VERSIONED_FILE.match(Path(model_file).name)
    if match:
        return match.group(1)
    return sentencepiece_version({piece.piece: i for i, piece in enumerate(proto.pieces)}).value


# --- the exact tokenizers pipeline ----------------------------------------------------------------------------


def _merges(proto: Any) -> list[tuple[str, str]]:
    """BPE merges in SentencePiece's order: by the score of the merged piece, then by its id.

    The whitespace-only pieces (`▁▁`, `▁▁▁▁`, ...) all score the same and SentencePiece breaks that tie by position;
    ranking them by id reproduces its result on runs of "▁" of every length (the tests check runs up to 260).
    """
    normal = {piece.piece: (piece.score, i) for i, piece in enumerate(proto.pieces) if piece.type == PieceType.NORMAL}
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
        raise TokenizerFileError("Only BPE SentencePiece models with byte fallback (Mistral's) are supported.")
    if spec.precompiled_charsmap or spec.remove_extra_whitespaces or not spec.add_dummy_prefix:
        raise TokenizerFileError(
            "This SentencePiece model normalizes text differently from Mistral's; it is not supported."
        )
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=_merges(proto), unk_token=unk, fuse_unk=True, byte_fallback=True))

    user_defined = [piece.piece for piece in proto.pieces if piece.type == PieceType.USER_DEFINED]
    # Spaces become "▁" in the pre-tokenizer, not in a normalizer: `Metaspace` replaces a character in one pass,
    # where a `Replace` normalizer runs a regex: ~13% of the instructions of an encode (callgrind, v1 and v3).
    # User-defined pieces hold no space, so matching them before or after that replacement is the same.
    spaces = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="never", split=False)
    if legacy:
        if user_defined:
            raise TokenizerFileError(
                "A tokenizer v1 with user-defined pieces is not a Mistral tokenizer; it is not supported."
            )
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
        [
            AddedToken(p.piece, special=True, normalized=False)
            for p in proto.pieces
            if p.type in (PieceType.UNKNOWN, PieceType.CONTROL)
        ]
    )
    if user_defined:
        tokenizer.add_tokens([AddedToken(piece, special=False, normalized=True) for piece in user_defined])
    return tokenizer


@lru_cache(maxsize=8)
def _serialized_backend(proto_bytes: bytes, legacy: bool) -> str:
    """`build_backend` as tokenizer.json text, cached: tests and notebooks load the same files again and again."""
    from sentencepiece import sentencepiece_model_pb2

    return build_backend(sentencepiece_model_pb2.ModelProto.FromString(proto_bytes), legacy).to_str()


class MistralSentencePieceTokenizer(MistralTokenizerBase):
    """A fast transformers tokenizer over a Mistral SentencePiece model that encodes like mistral-common.

    Plain calls (`tok(text)`, `encode`, batches, offsets) run the exact `tokenizers` pipeline of `build_backend`;
    `apply_chat_template` keeps control-token spellings in the conversation as text, JSON-normalizes tool calls and
    results as mistral-common does and computes `assistant_masks` from the token offsets. `legacy` is True for
    tokenizer v1 (every text segment between special tokens gets a dummy prefix) and False for v2/v3/v7.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}
    kind = TokenizerKind.sentencepiece

    def __init__(self, *args: Any, mistral_version: str | None = None, legacy: bool | None = None, **kwargs: Any):
        legacy = prefix_every_segment(mistral_version) if legacy is None else legacy
        super().__init__(*args, mistral_version=mistral_version, legacy=legacy, **kwargs)
        self.legacy = legacy

    @classmethod
    def from_sentencepiece(
        cls, model_file: str | os.PathLike, version: str | None = None, **kwargs: Any
    ) -> MistralSentencePieceTokenizer:
        """The tokenizer of a Mistral SentencePiece file (`version` read from its name or vocabulary if omitted)."""
        proto = read_sentencepiece(model_file)
        version = version or file_version(model_file, proto)
        legacy = prefix_every_segment(version)
        controls = [p.piece for p in proto.pieces if p.type == PieceType.CONTROL and p.piece not in ("<s>", "</s>")]
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
