"""Mistral's tekken.json (Mistral-Nemo and later: tokenizer v3 to v15) as an exact `tokenizers` pipeline.

tiktoken's byte-level BPE, reproduced exactly: the file's own pre-tokenizer regex, merges ranked by the rank of the
merged token (ties between two pairs cannot arise on a tekken vocabulary: tested on every code point), a whole
pre-token that is in the vocabulary taken as it is (tiktoken's shortcut: `ignore_merges`), the special tokens at ids
0 .. n-1 and the vocabulary after them, and byte-level decoding of each run of text tokens on its own, as
mistral-common decodes. A v15 file's `model_settings_builder` (the reasoning efforts its model takes, and the default)
is read and checked at load, and travels with the tokenizer to its chat template.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from ..versions import TEKKEN_FILE, MistralFormat, TokenizerKind, TokenizerVersion, find_format, versions
from .base import MistralTokenizerBase
from .errors import TokenizerFileError

logger = logging.getLogger(__name__)

_TEKKEN_FILLER = "<SPECIAL_{}>"  # mistral-common's name for the special ids a file leaves unnamed


def is_tekken_file(path: str | os.PathLike) -> bool:
    """A tekken tokenizer file by its name, as mistral-common tells them (`tekken*.json`, `*tekken*.json`)."""
    name = Path(path).name
    return "tekken" in name and name.endswith(".json")


# The most special tokens a tekken file may reserve. Mistral's files reserve 1000; each one gets a name here, so the
# bound keeps a crafted `default_num_special_tokens` (1e9) from allocating gigabytes of names.
MAX_SPECIAL_TOKENS = 100_000


def read_tekken(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of a tekken.json, checked: `config` (pattern, sizes, `version`), `vocab` in rank order, the
    special tokens (mistral-common's default list for files of v7 and before that have none) and, from v15 on, the
    `model_settings_builder` ("settings"; None before v15). Raises `TokenizerFileError` naming what in the file is
    wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
        config = data["config"]
        vocab = data["vocab"]
        pattern, version = config["pattern"], config["version"]
        num_special = _count(config, "default_num_special_tokens", 1, MAX_SPECIAL_TOKENS)
        inner = _count(config, "default_vocab_size", 0, 2**31) - num_special
        if not isinstance(pattern, str) or not isinstance(version, str) or not isinstance(vocab, list):
            raise ValueError("config.pattern and config.version must be strings and vocab a list")
        if not 256 <= inner <= len(vocab):
            raise ValueError("its config does not fit its vocab")
        tokens = tuple(entry["token_bytes"] for entry in vocab[:inner])
        if not all(isinstance(token, str) for token in tokens):
            raise ValueError("each vocab entry's token_bytes must be a base64 string")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise TokenizerFileError(
            f"{path} is not a tekken tokenizer file ({type(error).__name__}: {error}); use the model's own tekken.json."
        ) from error
    try:
        Regex(pattern)
    except Exception as error:  # tokenizers raises a bare Exception for a pattern Oniguruma cannot compile
        raise TokenizerFileError(
            f"{path}: config.pattern is not a regular expression the tokenizers library can run ({error}); use the "
            "model's own tekken.json."
        ) from None
    row = find_format(version, TokenizerKind.tekken)
    if row is None:
        raise TokenizerFileError(
            f"{path} is a tekken tokenizer of version {version!r}; hf-mistral-kit templates tekken versions "
            f"{', '.join(versions(TokenizerKind.tekken))}. Load it with transformers' MistralCommonBackend instead."
        )
    specials = data.get("special_tokens")
    if specials is None:
        if not row.default_special_tokens:
            raise TokenizerFileError(
                f"{path} is a tekken {version} file without its special_tokens list (mistral-common refuses it too); "
                "use the model's complete tekken.json."
            )
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer

        specials = [dict(token) for token in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    try:
        ordered = sorted(specials, key=lambda token: int(token["rank"]))
        ranks = [int(token["rank"]) for token in ordered]
        names = [str(getattr(token["token_str"], "value", token["token_str"])) for token in ordered]
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise TokenizerFileError(
            f"{path}: special_tokens must be a list of {{'rank': int, 'token_str': str}} ({type(error).__name__}: "
            f"{error}); use the model's own tekken.json."
        ) from None
    if ranks != list(range(len(ranks))) or len(ranks) > num_special:
        raise TokenizerFileError(f"{path}: the special tokens' ranks must be 0, 1, ... below {num_special}.")
    names += [_TEKKEN_FILLER.format(rank) for rank in range(len(names), num_special)]
    if len(set(names)) != len(names):
        raise TokenizerFileError(f"{path}: two special tokens have the same name.")
    missing = [token for token in row.controls() if token not in names]
    if missing:
        raise TokenizerFileError(
            f"{path} is a tekken {version} file without the control tokens {', '.join(missing)} that Mistral's "
            f"{version} format writes (mistral-common refuses it too); use the model's own tekken.json."
        )
    settings = _model_settings(path, data.get("model_settings_builder"), row)
    return {
        "path": str(path),
        "pattern": pattern,
        "version": version,
        "specials": names,
        "tokens": tokens,
        "settings": settings,
    }


def _model_settings(path: Path, builder: Any, row: MistralFormat) -> dict[str, Any] | None:
    """A file's `model_settings_builder` as mistral-common reads it (`ModelSettingsBuilder`), normalized (every field
    written out), for tokenizer v15 and later; None before v15, where mistral-common refuses the section. The kit
    renders the builders Mistral ships, with a `reasoning_effort` enum and no `json_schema`."""
    if row.version < TokenizerVersion.v15:
        if builder is not None:
            raise TokenizerFileError(
                f"{path} is a tekken {row.version} file with a model_settings_builder, which tokenizer v15 introduced "
                "(mistral-common refuses it too); remove that section, or use the model's own tekken.json."
            )
        return None
    if builder is None:
        raise TokenizerFileError(
            f"{path} is a tekken {row.version} file without its model_settings_builder (mistral-common loads it but "
            "refuses every conversation with it); use the model's own tekken.json."
        )
    from mistral_common.tokens.tokenizers.model_settings_builder import ModelSettingsBuilder

    try:
        parsed = ModelSettingsBuilder.model_validate(builder)
    except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        reason = " ".join(str(error).split())
        raise TokenizerFileError(
            f"{path}: its model_settings_builder is not one mistral-common reads ({reason}); use the model's own "
            "tekken.json."
        ) from None
    if parsed.json_schema is not None or parsed.reasoning_effort is None:
        has = "no reasoning_effort" if parsed.json_schema is None else "json_schema (response_format as model settings)"
        raise TokenizerFileError(
            f"{path}: its model_settings_builder has {has}; hf-mistral-kit renders the model settings of builders "
            "with a reasoning_effort and no json_schema (Mistral Small 4's). Load it with transformers' "
            "MistralCommonBackend instead."
        )
    return parsed.model_dump(mode="json", exclude_none=True)


def _count(config: dict[str, Any], key: str, low: int, high: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"config.{key} must be an integer from {low} to {high:,}, got {value!r}")
    return value


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
    try:
        strings, merges = _tekken_vocabulary(tekken["tokens"])
    except ValueError as error:  # binascii.Error (not base64) is a ValueError
        raise TokenizerFileError(
            f"{tekken['path']}: its vocab is not a tekken vocabulary ({error}); use the model's own tekken.json."
        ) from None
    specials = tekken["specials"]
    vocab = {string: rank + len(specials) for rank, string in enumerate(strings)}
    clashes = sorted(set(specials) & set(vocab))
    if clashes:
        raise TokenizerFileError(
            f"{tekken['path']}: special tokens {clashes[:3]} are also spelled by vocabulary entries; not supported."
        )
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


class MistralTekkenTokenizer(MistralTokenizerBase):
    """A fast transformers tokenizer over a Mistral tekken.json (Mistral-Nemo and later) that encodes like
    mistral-common's Tekkenizer: its own pre-tokenizer regex, byte-level BPE, the special tokens at ids 0 .. n-1
    (`<s>` 1, `</s>` 2, `[INST]` 3, ...) and byte-level decoding, each run of text tokens on its own.

    `mistral_version` is the file's `config.version` (v3, v7, v11, v13, v15), which picks the kit's template;
    `model_settings_builder` its v15 model settings (the reasoning efforts the model takes, and the default).
    """

    vocab_files_names = {"vocab_file": TEKKEN_FILE, "tokenizer_file": "tokenizer.json"}
    kind = TokenizerKind.tekken

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
            # The file is the one home of its model settings.
            "model_settings_builder": tekken["settings"],
        }
        backend = build_tekken_backend(tekken)
        return cls(_backend=backend, vocab_file=str(tekken_file), mistral_version=tekken["version"], **kwargs)

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
