"""The tokenizer inside a GGUF file: Mistral's SentencePiece model written out as a vocabulary, in and out.

Reading: the vocabulary (pieces, scores, types and special ids) is turned back into the SentencePiece model, checked
to be one of Mistral's tokenizers (v1, v2, v3 or v7, piece for piece), stored as `tokenizer.model.vN` in the kit's
cache and loaded with `load_tokenizer`, which gives mistral-common's ids and the matching chat template.

Writing: `gguf_vocabulary` is what llama.cpp needs from a checkpoint's SentencePiece file (and its added tokens), and
`add_space_prefix` the value of `tokenizer.ggml.add_space_prefix` for the version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hub import cache_dir
from ..tokenizers.loading import TOKENIZER_FILE_PATTERN, load_tokenizer, reference_tokenizer_file
from ..tokenizers.sentencepiece import VERSIONED_FILE, PieceType
from ..versions import FORMATS, TokenizerKind, find_format
from .errors import GGUFError
from .gguf_container import ARRAY, FLOAT, INTEGER, STRING

logger = logging.getLogger(__name__)

# The vocabulary keys the kit reads, by kind (and an array's items' kind): a file storing one as another is refused
# (`gguf.check_metadata_types`).
VOCABULARY_KEYS: dict[str, tuple[str, str | None]] = {
    "tokenizer.ggml.model": (STRING, None),
    "tokenizer.ggml.tokens": (ARRAY, STRING),
    "tokenizer.ggml.scores": (ARRAY, FLOAT),
    "tokenizer.ggml.token_type": (ARRAY, INTEGER),
    "tokenizer.ggml.unknown_token_id": (INTEGER, None),
    "tokenizer.ggml.bos_token_id": (INTEGER, None),
    "tokenizer.ggml.eos_token_id": (INTEGER, None),
    "tokenizer.ggml.padding_token_id": (INTEGER, None),
    "tokenizer.chat_template": (STRING, None),
}


def add_space_prefix(version: str) -> bool:
    """llama.cpp's `tokenizer.ggml.add_space_prefix` for a SentencePiece tokenizer version.

    llama.cpp's SentencePiece tokenizer puts a space before every piece of text that follows a special token when it
    is true (and before none when false). Tokenizer v1 (Mistral 7B v0.1/v0.2, Mixtral 8x7B) encodes every such piece
    with SentencePiece's dummy prefix, so llama.cpp's ids for a kit-rendered chat equal mistral-common's with `true`;
    v2/v3/v7 templates write the space after [INST]/[/INST] themselves and SentencePiece adds a dummy prefix only at the
    very start of the input, so llama.cpp's chat ids match with `false` (plain text given to llama.cpp's tokenizer
    then gets no leading space). This is the table's dummy-prefix rule (`MistralFormat.prefix_every_segment`).
    """
    return find_format(version, TokenizerKind.sentencepiece).prefix_every_segment


def _reference_vocabularies() -> dict[str, Any]:
    """Mistral's SentencePiece models shipped in mistral-common, by version."""
    from sentencepiece import sentencepiece_model_pb2

    return {
        row.key: sentencepiece_model_pb2.ModelProto.FromString(reference_tokenizer_file(row.key).read_bytes())
        for row in FORMATS
        if row.kind is TokenizerKind.sentencepiece and row.reference_file
    }


def sentencepiece_model_from_vocabulary(
    tokens: list[str], scores: list[float], types: list[int], special: Mapping[str, int]
) -> Any:
    """A SentencePiece `ModelProto` for Mistral's tokenizer settings (BPE, byte fallback, identity normalization,
    dummy prefix) holding `tokens` with their `scores` and `types` (GGUF token types are SentencePiece's)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    for token, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add(piece=token, score=score)
        if kind != PieceType.NORMAL:  # SentencePiece leaves the default type unset
            piece.type = kind
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = PieceType.BYTE in types
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.max_sentencepiece_length = 16
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = (
        special["unk"],
        special["bos"],
        special["eos"],
        -1,
    )
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece = (tokens[special[n]] for n in ("unk", "bos", "eos"))
    reserved = {special["unk"], special["bos"], special["eos"]}
    trainer.control_symbols.extend(
        t for i, t in enumerate(tokens) if types[i] == PieceType.CONTROL and i not in reserved
    )
    trainer.user_defined_symbols.extend(t for i, t in enumerate(tokens) if types[i] == PieceType.USER_DEFINED)
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.precompiled_charsmap = b""
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.normalization_rule_tsv = ""
    return model


def _matching_version(tokens: list[str], scores: list[float], types: list[int], source: Any) -> tuple[str, Any]:
    """Which of Mistral's SentencePiece tokenizers (v1, v2, v3, v7) this vocabulary is, piece for piece; and that
    reference model."""
    best: tuple[int, str] | None = None
    for version, reference in _reference_vocabularies().items():
        pieces = reference.pieces
        if len(tokens) < len(pieces):
            continue
        differing = [
            i
            for i, piece in enumerate(pieces)
            if tokens[i] != piece.piece
            # llama.cpp's converter scores control and added tokens -1000, writes user-defined pieces as normal or
            # control ones: Mistral's scores and types for those pieces are restored below.
            or (
                piece.type in (PieceType.NORMAL, PieceType.BYTE)
                and (types[i] != piece.type or scores[i] != piece.score)
            )
            or (
                piece.type in (PieceType.CONTROL, PieceType.UNKNOWN)
                and types[i] not in (PieceType.CONTROL, PieceType.UNKNOWN)
            )
            or (
                piece.type == PieceType.USER_DEFINED
                and types[i] not in (PieceType.USER_DEFINED, PieceType.CONTROL, PieceType.NORMAL)
            )
        ]
        if not differing:
            return version, reference
        if best is None or len(differing) < best[0]:
            best = (len(differing), f"{version} differs at id {differing[0]} ({tokens[differing[0]]!r})")
    detail = f"; closest: {best[1]}" if best else ""
    raise GGUFError(
        f"{source}: the vocabulary is not one of Mistral's SentencePiece tokenizers (v1, v2, v3, v7){detail}. The kit "
        "only vouches for those; load this tokenizer with transformers.AutoTokenizer.from_pretrained(..., "
        "gguf_file=...) or from the model's original repository."
    )


def tokenizer_files_from_gguf_fields(fields: Mapping[str, Any], source: Any) -> tuple[str, bytes, list[str]]:
    """(version, serialized SentencePiece model, added tokens beyond it) rebuilt from a GGUF's vocabulary."""
    model_kind = fields.get("tokenizer.ggml.model")
    if model_kind != "llama":
        raise GGUFError(
            f"{source} holds a {model_kind!r} tokenizer, not a SentencePiece one (tokenizer.ggml.model 'llama'); the "
            "kit rebuilds Mistral's SentencePiece tokenizers (v1/v2/v3/v7) from a GGUF, not tekken ones."
        )
    tokens = list(fields.get("tokenizer.ggml.tokens") or [])
    scores = [float(s) for s in fields.get("tokenizer.ggml.scores") or [0.0] * len(tokens)]
    types = [int(t) for t in fields.get("tokenizer.ggml.token_type") or [int(PieceType.NORMAL)] * len(tokens)]
    if not tokens or len(scores) != len(tokens) or len(types) != len(tokens):
        raise GGUFError(f"{source}: the vocabulary (tokens, scores, token types) is missing or inconsistent.")
    version, reference = _matching_version(tokens, scores, types, source)
    base = len(reference.pieces)
    special = {
        "unk": int(fields.get("tokenizer.ggml.unknown_token_id", reference.trainer_spec.unk_id)),
        "bos": int(fields.get("tokenizer.ggml.bos_token_id", reference.trainer_spec.bos_id)),
        "eos": int(fields.get("tokenizer.ggml.eos_token_id", reference.trainer_spec.eos_id)),
    }
    for name, expected in (("unk", reference.trainer_spec.unk_id), ("bos", 1), ("eos", 2)):
        if special[name] != expected:
            raise GGUFError(f"{source}: {name} token id {special[name]} is not Mistral's ({expected}).")
    # Pieces whose score or control/user-defined type llama.cpp rewrote get Mistral's values back.
    fixed_scores = [piece.score for piece in reference.pieces]
    fixed_types = [piece.type for piece in reference.pieces]
    model = sentencepiece_model_from_vocabulary(tokens[:base], fixed_scores, fixed_types, special)
    if fixed_scores != scores[:base] or fixed_types != types[:base]:
        logger.info("%s: scores/types of control pieces restored to Mistral's tokenizer %s.", source, version)
    added = []
    for i in range(base, len(tokens)):
        if types[i] in (PieceType.CONTROL, PieceType.USER_DEFINED):
            added.append(tokens[i])
        elif types[i] != PieceType.UNUSED:  # llama.cpp pads vocabularies with unused [PADn] tokens
            raise GGUFError(f"{source}: token {i} ({tokens[i]!r}) extends Mistral's vocabulary as a normal piece.")
        elif added and i < len(tokens) - 1 and types[i + 1] != PieceType.UNUSED:
            raise GGUFError(f"{source}: added tokens after unused ones are not supported.")
    return version, model.SerializeToString(), added


def tokenizer_from_gguf_fields(fields: Mapping[str, Any], source: Any, **kwargs: Any):
    """The kit tokenizer for a GGUF's vocabulary: the SentencePiece model rebuilt as `tokenizer.model.vN` (plus
    `added_tokens.json` for tokens beyond it) under the kit's cache, loaded with `load_tokenizer`."""
    version, model, added = tokenizer_files_from_gguf_fields(fields, source)
    position = {token: index for index, token in enumerate(fields["tokenizer.ggml.tokens"])}
    added_json = json.dumps({t: position[t] for t in added}, ensure_ascii=False, indent=2) if added else ""
    digest = hashlib.sha256(model + added_json.encode()).hexdigest()[:16]
    try:
        model_file = _store_tokenizer(cache_dir() / "gguf-tokenizers" / digest, version, model, added_json)
    except OSError:  # a read-only cache: a private temporary directory instead
        import tempfile

        model_file = _store_tokenizer(Path(tempfile.mkdtemp(prefix="hf-mistral-kit-gguf-")), version, model, added_json)
    tokenizer = load_tokenizer(model_file, **kwargs)
    pad = fields.get("tokenizer.ggml.padding_token_id")
    if (
        "pad_token" not in kwargs
        and pad is not None
        and int(pad) != tokenizer.eos_token_id
        and int(pad) < len(tokenizer)
    ):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
    template = fields.get("tokenizer.chat_template")
    if template and template != tokenizer.chat_template:
        logger.info("%s: its chat template is replaced by the kit's exact one for tokenizer %s.", source, version)
    return tokenizer


def _store_tokenizer(directory: Path, version: str, model: bytes, added_json: str) -> Path:
    """`directory/tokenizer.model.<version>` holding `model` (and `added_tokens.json`), written atomically once."""
    model_file = directory / f"tokenizer.model.{version}"
    if model_file.is_file() and model_file.read_bytes() == model:
        return model_file
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (("added_tokens.json", added_json.encode()), (model_file.name, model)):
        if data:
            staging = directory / f".{name}.{os.getpid()}"
            staging.write_bytes(data)
            staging.replace(directory / name)
    return model_file


def _tokenizer_source(src: Path) -> Path:
    files = sorted(f for f in src.iterdir() if f.is_file() and TOKENIZER_FILE_PATTERN.match(f.name))
    sentencepiece = [f for f in files if not f.name.startswith("tekken")]
    if not sentencepiece:
        if files:
            raise GGUFError(
                f"{src} has a tekken tokenizer; the kit writes GGUF files with Mistral's SentencePiece vocabularies "
                "only. Use llama.cpp's convert_hf_to_gguf.py on a copy of the folder without tekken.json (the "
                "README's llama.cpp section says why)."
            )
        raise GGUFError(
            f"{src} has no tokenizer file: a GGUF carries the SentencePiece vocabulary (tokenizer.model or "
            "tokenizer.model.v1/v2/v3/v7). Copy the model's tokenizer file into it."
        )
    versioned = [f for f in sentencepiece if VERSIONED_FILE.match(f.name)]
    return (versioned or sentencepiece)[0]


def _added_tokens(src: Path, base: int) -> dict[int, tuple[str, bool]]:
    """Tokens a fine-tune added beyond the SentencePiece vocabulary: id -> (content, special)."""
    added: dict[int, tuple[str, bool]] = {}
    config = src / "tokenizer_config.json"
    if config.is_file():
        for key, entry in json.loads(config.read_text()).get("added_tokens_decoder", {}).items():
            if int(key) >= base:
                added[int(key)] = (entry["content"], bool(entry.get("special", True)))
    if (src / "added_tokens.json").is_file():
        for token, index in json.loads((src / "added_tokens.json").read_text()).items():
            if index >= base:
                added.setdefault(int(index), (token, True))
    return added


def gguf_vocabulary(src: Path, vocab_size: int) -> dict[str, Any]:
    """The vocabulary llama.cpp needs, from `src`'s SentencePiece file (and added tokens), padded to `vocab_size`."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    model_file = _tokenizer_source(src)
    model = pb.ModelProto.FromString(model_file.read_bytes())
    tokens = [piece.piece for piece in model.pieces]
    scores = [piece.score for piece in model.pieces]
    types = [piece.type for piece in model.pieces]
    for index, (content, special) in sorted(_added_tokens(src, len(tokens)).items()):
        if index != len(tokens):
            raise GGUFError(f"{src}: added token {content!r} has id {index}, expected {len(tokens)} (ids must follow).")
        tokens.append(content)
        scores.append(-1000.0)
        types.append(int(PieceType.CONTROL if special else PieceType.USER_DEFINED))
    if len(tokens) > vocab_size:
        raise GGUFError(f"{src}: the tokenizer has {len(tokens)} tokens, more than vocab_size ({vocab_size}).")
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        scores.append(-1000.0)
        types.append(int(PieceType.UNUSED))
    processor = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
    return {
        "file": model_file,
        "tokens": tokens,
        "scores": scores,
        "types": types,
        "bos": processor.bos_id(),
        "eos": processor.eos_id(),
        "unk": processor.unk_id(),
    }


def vocabulary_version(vocabulary: Mapping[str, Any]) -> str:
    """Which of Mistral's SentencePiece tokenizers a `gguf_vocabulary` is."""
    return _matching_version(vocabulary["tokens"], vocabulary["scores"], vocabulary["types"], vocabulary["file"])[0]
