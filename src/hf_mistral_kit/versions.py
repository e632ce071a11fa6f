"""Mistral's tokenizer versions: an ordered type and the ONE table of what each version means to the kit.

A version (`TokenizerVersion`, v1 < v2 < v3 < v7 < v11 < v13 < v15, as mistral-common numbers them) comes in one or
two kinds of file: Mistral's SentencePiece models (`tokenizer.model.vN`) and tekken.json (Mistral-Nemo and later). Each
(version, kind) pair the kit supports is one row of `FORMATS`; every other per-version table of the kit (templates,
reference files, tekken control tokens, the dummy-prefix rule and GGUF's `add_space_prefix`, the tiny models'
tokenizers, the CLI's template names) is derived from it here, and the conversation contract picks its rule classes
by comparing versions (`hf_mistral_kit.chat`). A new version is one row here, its template in `chat_templates/`, and
a rule class in `hf_mistral_kit.chat` only where it changes a rule.

ChatML (Mistral-7B-OpenOrca's format) is a template of the kit but no Mistral tokenizer version: its facts are the
`CHATML_*` names below.

Nothing here imports anything but the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class TokenizerVersion(str, Enum):
    """A Mistral tokenizer version, ordered by its number (mistral-common's `TokenizerVersion`)."""

    v1 = "v1"
    v2 = "v2"
    v3 = "v3"
    v7 = "v7"
    v11 = "v11"
    v13 = "v13"
    v15 = "v15"

    @property
    def number(self) -> int:
        return int(self.value[1:])

    def __lt__(self, other: object) -> bool:
        return self.number < TokenizerVersion(other).number

    def __le__(self, other: object) -> bool:
        return self.number <= TokenizerVersion(other).number

    def __gt__(self, other: object) -> bool:
        return self.number > TokenizerVersion(other).number

    def __ge__(self, other: object) -> bool:
        return self.number >= TokenizerVersion(other).number

    def __str__(self) -> str:
        return self.value


class TokenizerKind(str, Enum):
    """The two kinds of Mistral tokenizer file."""

    sentencepiece = "sentencepiece"
    tekken = "tekken"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class MistralFormat:
    """One Mistral tokenizer version in one kind of file, as the kit renders and tokenizes it."""

    version: TokenizerVersion
    kind: TokenizerKind
    template: str  # the kit's chat template in chat_templates/
    models: str  # the models released with it (error messages, the README's table)
    adds: str = ""  # what the format writes that the versions before it do not
    reference_file: str | None = None  # the file of this version mistral-common ships in mistral_common/data/
    # tekken: the control tokens this version writes on top of the previous version's (mistral-common's instruct
    # tokenizer looks them up when it is built, so a file without them does not load there either).
    new_controls: tuple[str, ...] = ()
    # SentencePiece: how a vocabulary of this version is told from the earlier ones, (piece, id or None for any id).
    marker: tuple[str, int | None] | None = None

    @property
    def prefix_every_segment(self) -> bool:
        """SentencePiece writes its dummy prefix "▁" before every text segment between control tokens (tokenizer v1,
        `legacy=True`) rather than only at the start of the input (v2 and later, whose templates write the space
        after control tokens themselves). llama.cpp's `tokenizer.ggml.add_space_prefix` is this same rule, so a
        GGUF of the version carries this value."""
        return self.kind is TokenizerKind.sentencepiece and self.version is TokenizerVersion.v1

    @property
    def default_special_tokens(self) -> bool:
        """tekken: a file of this version may leave out its special tokens, which are then mistral-common's defaults
        (`Tekkenizer.DEPRECATED_SPECIAL_TOKENS`); later files must list theirs (mistral-common refuses them too)."""
        return self.kind is TokenizerKind.tekken and self.version <= TokenizerVersion.v7

    @property
    def key(self) -> str:
        """What `reference_tokenizer_file` and `tiny_model(tokenizer=...)` call this row: the version for a
        SentencePiece file, "tekken" for Mistral-Nemo's tekken.json."""
        return self.version.value if self.kind is TokenizerKind.sentencepiece else self.kind.value

    @property
    def file_name(self) -> str:
        """The name of this format's tokenizer file in a checkpoint directory."""
        return f"tokenizer.model.{self.version}" if self.kind is TokenizerKind.sentencepiece else TEKKEN_FILE

    @property
    def description(self) -> str:
        """The README's words for the format, e.g. 'tekken.json version v11: [CALL_ID], [ARGS]'."""
        what = "tokenizer" if self.kind is TokenizerKind.sentencepiece else "tekken.json version"
        return f"{what} {self.version}" + (f": {self.adds}" if self.adds else "")

    def controls(self) -> tuple[str, ...]:
        """Every control token this format writes (tekken): its own and those of the earlier versions."""
        return tuple(
            token
            for row in FORMATS
            if row.kind is self.kind and row.version <= self.version
            for token in row.new_controls
        )


V, SP, TK = TokenizerVersion, TokenizerKind.sentencepiece, TokenizerKind.tekken
TEKKEN_FILE = "tekken.json"
# The key of tokenizer_config.json that says the kit saved the folder (and which Mistral tokenizer version it is); a
# kit tokenizer's attribute of the same name.
VERSION_KEY = "mistral_version"
# The control tokens replies are read by (`hf_mistral_kit.chat.replies`): the end of a turn, where the assistant's turn
# starts, tool calls (v2 and later), and v11's call ids and arguments.
EOS, INST_END, TOOL_RESULTS_END = "</s>", "[/INST]", "[/TOOL_RESULTS]"
TOOL_CALLS, CALL_ID, ARGS = "[TOOL_CALLS]", "[CALL_ID]", "[ARGS]"
# Tokenizer v15's model settings block, written before the first user turn: [MODEL_SETTINGS]{json}[/MODEL_SETTINGS].
MODEL_SETTINGS, MODEL_SETTINGS_END = "[MODEL_SETTINGS]", "[/MODEL_SETTINGS]"

FORMATS: tuple[MistralFormat, ...] = (
    MistralFormat(
        V.v1,
        SP,
        "mistral_v1",
        "Mistral-7B-Instruct v0.1/v0.2, Mixtral-8x7B-Instruct-v0.1 and their fine-tunes or pruned variants",
        reference_file="tokenizer.model.v1",
    ),
    # v2 (Mixtral-8x22B's first release) writes tool calls and results differently from v3 and the kit has no v2
    # tool template: it is rendered with the v3 template, and conversations with tools are refused.
    MistralFormat(
        V.v2,
        SP,
        "mistral_v3",
        "Mixtral-8x22B-Instruct-v0.1 (its first release)",
        adds="control tokens",
        reference_file="mistral_instruct_tokenizer_240216.model.v2",
        marker=("[INST]", None),
    ),
    MistralFormat(
        V.v3,
        SP,
        "mistral_v3",
        "Mistral-7B-Instruct-v0.3, Mixtral-8x22B-Instruct-v0.1",
        adds="control tokens, function calling",
        reference_file="mistral_instruct_tokenizer_240323.model.v3",
        marker=("[IMG]", 10),
    ),
    MistralFormat(
        V.v7,
        SP,
        "mistral_v7",
        "Mistral-Large-Instruct-2411, Pixtral-Large-Instruct-2411 (text)",
        adds="[SYSTEM_PROMPT], text with tool calls, [TOOL_CONTENT]",
        reference_file="mistral_instruct_tokenizer_241114.model.v7",
        marker=("[SYSTEM_PROMPT]", None),
    ),
    MistralFormat(
        V.v3,
        TK,
        "mistral_tekken_v3",
        "Mistral-Nemo-Instruct-2407, Ministral-8B-Instruct-2410, Pixtral-12B-2409 (text)",
        # Mistral-Nemo's; tekken_240911.json (Pixtral-12B's) has the same vocabulary.
        reference_file="tekken_240718.json",
        new_controls=(
            "<s>",
            EOS,
            "[INST]",
            INST_END,
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            TOOL_RESULTS_END,
            TOOL_CALLS,
            "[PREFIX]",
            "[SUFFIX]",
        ),
    ),
    MistralFormat(
        V.v7,
        TK,
        "mistral_tekken_v7",
        "Mistral-Small-24B-Instruct-2501, Mistral-Small-3.1-24B-Instruct-2503 (text), Devstral-Small-2505",
        new_controls=("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"),
    ),
    MistralFormat(
        V.v11,
        TK,
        "mistral_tekken_v11",
        "Mistral-Small-3.2-24B-Instruct-2506",
        adds="[CALL_ID], [ARGS]",
        new_controls=(ARGS, CALL_ID),
    ),
    MistralFormat(
        V.v13,
        TK,
        "mistral_tekken_v13",
        "Magistral-Small-2507/2509, Devstral-Small-2507",
        adds="[ARGS], [THINK]",
    ),
    MistralFormat(
        V.v15,
        TK,
        "mistral_tekken_v15",
        "Mistral-Small-4-119B-2603",
        adds="[MODEL_SETTINGS], reasoning_effort",
        new_controls=(MODEL_SETTINGS, MODEL_SETTINGS_END),
    ),
)
# The control tokens that open and close thinking (tokenizer v13); a v13 tekken file may come without them, and then
# thinking is not rendered (as mistral-common does).
THINK_TOKENS = ("[THINK]", "[/THINK]")
# The request field (and chat-template variable) a tekken v15 file's `model_settings_builder` turns into the model
# settings block; the file says which values its model takes and which is the default.
REASONING_EFFORT = "reasoning_effort"
# Mistral-Small-4-119B-2603's `model_settings_builder`: reasoning_effort "none" (its default) or "high". The v15
# template's fallback when it is used alone (plain transformers, no reasoning_effort given), and the builder of the
# tekken v15 files the kit derives (`hf_mistral_kit.tokenizers.derived`).
SMALL_4_MODEL_SETTINGS = {
    REASONING_EFFORT: {"type": "enum", "accepts_none": True, "default": "none", "values": ["none", "high"]},
}

# ChatML: Mistral-7B-OpenOrca's format, a template of the kit without a Mistral tokenizer version.
CHATML = "chatml"
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_MODELS = "Mistral-7B-OpenOrca and other ChatML fine-tunes"


# --- derived -----------------------------------------------------------------------------------------------------


def find_format(version: str | TokenizerVersion | None, kind: TokenizerKind | str) -> MistralFormat | None:
    """The row of `version` in `kind` files (None when the kit has none, e.g. a SentencePiece v11 file)."""
    return next((row for row in FORMATS if row.version.value == version and row.kind.value == kind), None)


def versions(kind: TokenizerKind | str) -> list[str]:
    """The versions the kit supports in `kind` files, in order."""
    return [row.version.value for row in FORMATS if row.kind.value == kind]


# Every template of the kit, sorted as `list_templates()` lists chat_templates/ (the CLI's --template choices).
TEMPLATES: tuple[str, ...] = tuple(sorted({row.template for row in FORMATS} | {CHATML}))

# What `reference_tokenizer_file` / `tiny_model(tokenizer=...)` accept: "v1", "v2", "v3", "v7" and "tekken".
REFERENCE_FORMATS: dict[str, MistralFormat] = {row.key: row for row in FORMATS if row.reference_file}


def template_version(template: str) -> TokenizerVersion | None:
    """The newest tokenizer version a kit template renders (v3 for mistral_v3, which renders v2 too); None for
    ChatML."""
    rows = [row.version for row in FORMATS if row.template == template]
    return max(rows) if rows else None


def template_kind(template: str) -> TokenizerKind | None:
    """Which kind of tokenizer file a kit template is written for (None for ChatML, which fits both)."""
    return next((row.kind for row in FORMATS if row.template == template), None)


def template_format(template: str) -> MistralFormat | None:
    """The row whose version a kit template is named for (v3's for mistral_v3, which renders v2 too); None for
    ChatML and unknown names."""
    version = template_version(template)
    return next((row for row in FORMATS if row.template == template and row.version == version), None)


def template_models(template: str) -> str:
    """The models a kit template is for, in the README's words."""
    if template == CHATML:
        return f"{CHATML_MODELS} ({'/'.join(CHATML_TOKENS)})"
    row = template_format(template)
    return f"{row.models} ({row.description})"


def sentencepiece_version(vocab: Mapping[str, int]) -> TokenizerVersion:
    """The version of a Mistral SentencePiece vocabulary (piece -> id): the newest whose marker it holds."""
    found = TokenizerVersion.v1
    for row in FORMATS:
        if row.kind is SP and row.marker is not None:
            piece, index = row.marker
            if piece in vocab and (index is None or vocab[piece] == index):
                found = max(found, row.version)
    return found
