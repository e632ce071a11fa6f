"""Finding and loading Mistral tokenizers: files, checkpoint directories, folders the kit saved.

`load_tokenizer` gives the exact fast tokenizer of a SentencePiece file, a tekken.json, or a directory holding one
(or a `tokenizer.json`), with the kit's chat template for its version and what the folder adds on top of it (added
tokens, a pad token, padding side, ...).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import mistral_common
from tokenizers import AddedToken

from ..chat.templates import get_chat_template, list_templates
from ..hub import without_hub_kwargs
from ..versions import (
    CHATML,
    CHATML_TOKENS,
    REFERENCE_FORMATS,
    TEKKEN_FILE,
    VERSION_KEY,
    TokenizerKind,
    find_format,
    sentencepiece_version,
    versions,
)
from .base import MistralTokenizerBase
from .errors import TokenizerFileError
from .sentencepiece import VERSIONED_FILE, MistralSentencePieceTokenizer, file_version, read_sentencepiece
from .tekken import MistralTekkenTokenizer, is_tekken_file

logger = logging.getLogger(__name__)

MISTRAL_COMMON_DATA = Path(mistral_common.__file__).parent / "data"
# Tokenizer files of a checkpoint (Mistral's, and SentencePiece's `tokenizer.model`): what conversions carry along.
TOKENIZER_FILE_PATTERN = re.compile(r"^(tokenizer\.model(\.v\d+\w*)?|.*\.model\.v\d+\w*|tekken.*\.json)$")


def reference_tokenizer_file(version: str) -> Path:
    """The real Mistral tokenizer file of `version` shipped inside mistral-common: SentencePiece "v1", "v2", "v3",
    "v7", or "tekken" (Mistral-Nemo's tekken.json, instruct format v3)."""
    if version not in REFERENCE_FORMATS:
        raise ValueError(f"Unknown tokenizer version {version!r}; expected one of {sorted(REFERENCE_FORMATS)}.")
    return MISTRAL_COMMON_DATA / REFERENCE_FORMATS[version].reference_file


def find_tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The Mistral SentencePiece file of a directory: a versioned one (`tokenizer.model.v3`, ...) first."""
    directory = Path(directory)
    candidates = sorted(p for p in directory.glob("*.model.v*") if p.is_file() and VERSIONED_FILE.match(p.name))
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
    """The directory's Mistral tokenizer file if it is of a version the kit templates (else None: a tekken file of a
    later version, for one, is left to mistral-common)."""
    path = find_mistral_tokenizer_file(directory)
    if path is not None and is_tekken_file(path):
        try:
            version = json.loads(path.read_bytes()).get("config", {}).get("version")
        except (OSError, ValueError, AttributeError):
            return None
        return path if find_format(version, TokenizerKind.tekken) is not None else None
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise TokenizerFileError(
            f"Cannot read {path}: {error}. Fix or remove the file (saving the tokenizer with the kit rewrites it)."
        ) from error
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
            raise TokenizerFileError(
                f"{directory}: the tokenizer files disagree about added token {index} ({known['content']!r} or "
                f"{token['content']!r}); keep the right one in tokenizer.json and remove the others."
            )
    if sorted(entries) != list(range(vocab_size, vocab_size + len(entries))):
        raise TokenizerFileError(
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
    version = file_version(model_file, proto)
    if find_format(version, TokenizerKind.sentencepiece) is None:
        raise TokenizerFileError(
            f"{model_file.name} is a tokenizer {version} file; hf-mistral-kit templates versions "
            f"{sorted(versions(TokenizerKind.sentencepiece))}. Load it with transformers' MistralCommonBackend instead."
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
                "%s has no tekken.json: its tokenizer.json is used as it is, and its tekken version (%s), which "
                "decides Mistral's chat format, is unknown, so the folder's own chat template is kept. Add the "
                "model's tekken.json for the kit's exact template.",
                directory,
                ", ".join(versions(TokenizerKind.tekken)),
            )
        return tokenizer
    tokenizer = MistralSentencePieceTokenizer.from_pretrained(str(directory), **_tokenizer_kwargs(kwargs))
    if version is None:
        version = sentencepiece_version(tokenizer.get_vocab()).value
        legacy = find_format(version, TokenizerKind.sentencepiece).prefix_every_segment
        tokenizer.mistral_version, tokenizer.legacy = version, legacy
        tokenizer.init_kwargs.update(mistral_version=version, legacy=legacy)
        logger.warning(
            "%s has no SentencePiece file (tokenizer.model.vN): its tokenizer.json is used as it is, and ids "
            "may differ from mistral-common's where its pipeline differs from SentencePiece's.",
            directory,
        )
    return tokenizer


def _token_content(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def _tokenizer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Tokenizer arguments: what `from_pretrained` callers pass for downloads or for picking a class left out."""
    return without_hub_kwargs(kwargs, "chat_template")


def _set_template(tokenizer: Any, directory: Path, config: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """The kit's template for the tokenizer's version (ChatML where the vocabulary has its tokens), unless the
    caller passes one or the kit saved this folder with a template of its own (kept, with a warning when it is not
    one of the kit's verified templates)."""
    if kwargs.get("chat_template") is not None:
        tokenizer.chat_template = kwargs["chat_template"]
        return
    saved = _saved_template(directory, config)
    if VERSION_KEY in config and isinstance(config.get("response_template"), dict):
        tokenizer.response_template = config["response_template"]  # as saved (a custom one too)
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
    name = CHATML if CHATML_TOKENS[0] in vocab else tokenizer.kit_template
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
