"""The base class of the kit's Mistral tokenizers: exact chat encoding, control-token escaping, decoding, saving.

Two kinds of files, one subclass each (`hf_mistral_kit.tokenizers.sentencepiece`, `...tekken`), over this shared
base. Text in a conversation that spells a control token (`[INST]`, `</s>`, `<|im_end|>`, ...) stays text
(`hf_mistral_kit.tokenizers.escaping`). Saved folders load exactly in plain transformers (`tokenizer.json` +
`tokenizer_class: PreTrainedTokenizerFast`), in mistral-common and vLLM's mistral mode (`tokenizer.model.vN`,
`tekken.json`) and in converters that read `tokenizer.model`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from tokenizers import AddedToken, Tokenizer, normalizers
from transformers import BatchEncoding
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.chat_template_utils import render_jinja_template

from ..chat.limits import recursion_room
from ..chat.prepare import prepare_chat
from ..chat.replies import has_thinking_tokens
from ..chat.templates import reply_format_of, template_name
from ..versions import CHATML, REASONING_EFFORT, TokenizerKind, find_format, template_kind
from .errors import panics_as_file_errors
from .escaping import CHUNK_BREAK, ControlTokenEscaper

# What a saved tokenizer_config.json names: stock transformers (4.x and 5.x) loads tokenizer.json verbatim with it.
SAVED_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


class MistralTokenizerBase(TokenizersBackend):
    """What the kit's Mistral tokenizers share: exact chat encoding, control-token escaping, decoding, saving.

    Plain calls (`tok(text)`, `encode`, batches, offsets) run the subclass's exact `tokenizers` pipeline;
    `apply_chat_template` validates the conversation as mistral-common does (`hf_mistral_kit.chat.prepare`), keeps
    control-token spellings in it as text, and computes `assistant_masks` from the token offsets. Subclasses say which
    kind of file they read (`kind`, which with the version picks the kit's template: `kit_template`) and which source
    files a saved folder carries (`_source_files`).
    """

    model_input_names = ["input_ids", "attention_mask"]
    kind: ClassVar[TokenizerKind]  # which kind of Mistral tokenizer file the subclass reads

    def __init__(
        self,
        *args: Any,
        mistral_version: str | None = None,
        model_settings_builder: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        backend = kwargs.pop("_backend", None)  # built for this tokenizer alone: used without the base class's copy
        if backend is not None:
            self._tokenizer = backend
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        if model_settings_builder is not None:  # saved in tokenizer_config.json, as mistral_version is
            kwargs["model_settings_builder"] = model_settings_builder
        super().__init__(*args, mistral_version=mistral_version, **kwargs)
        self.mistral_version = mistral_version
        # A tekken v15 file's model settings (`hf_mistral_kit.tokenizers.tekken.read_tekken`): the reasoning efforts
        # its model takes and the default, which `apply_chat_template` resolves `reasoning_effort` with.
        self.model_settings_builder = model_settings_builder
        if kwargs.get("response_template") is not None:  # transformers releases that do not read it (< 5.13)
            self.response_template = kwargs["response_template"]

    @property
    def response_template(self) -> dict[str, Any] | None:
        """How this tokenizer's replies read back (transformers' `parse_response`, `transformers serve`): the one set
        (a kit-saved folder's, `kit.apply_chat_template`'s, yours), else the format of the tokenizer's template and
        version (`hf_mistral_kit.chat.templates.reply_format_of`)."""
        if getattr(self, "_response_template", None) is not None:
            return self._response_template
        fmt = reply_format_of(self)
        return fmt.response_template() if fmt is not None else None

    @response_template.setter
    def response_template(self, value: dict[str, Any] | None) -> None:
        self._response_template = value

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
        row = find_format(self.mistral_version, self.kind)
        return row.template if row is not None else None

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
        backend.add_special_tokens([AddedToken(CHUNK_BREAK, special=True, normalized=False)])
        backend.encode_special_tokens = False
        backend.no_padding()
        backend.no_truncation()
        return backend

    @cached_property
    def _has_thinking_tokens(self) -> bool:
        """Whether the vocabulary has v13's [THINK] and [/THINK] (a tekken v13 file may come without them)."""
        return has_thinking_tokens(self)

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

    def _encode_plus(self, *args: Any, **kwargs: Any) -> BatchEncoding:
        with panics_as_file_errors(self._source_name):
            return super()._encode_plus(*args, **kwargs)

    @property
    def _source_name(self) -> str:
        """The file (or folder) this tokenizer was loaded from, for error messages."""
        return str(getattr(self, "vocab_file", None) or self.name_or_path or "this tokenizer")

    def _add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        for cached in ("_escaper", "_chat_backend", "_user_defined", "_has_thinking_tokens"):
            self.__dict__.pop(cached, None)
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def _check_template(self, name: str | None) -> None:
        """Refuse a kit template written for the other kind of tokenizer: its ids could never be Mistral's."""
        if name is None or name == CHATML:
            return
        if template_kind(name) is not self.kind:
            kind = "tekken" if template_kind(name) is TokenizerKind.tekken else "SentencePiece"
            ours = "a tekken" if self.kind is TokenizerKind.tekken else "a SentencePiece"
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
        `reasoning_effort="high"` sets tokenizer v15's model settings (one of the values its tekken file's
        `model_settings_builder` allows; its default when not given), as mistral-common's request field does; other
        versions refuse it, as mistral-common does.
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
        # Plain, validated data (hf_mistral_kit.chat.prepare), then every string in it escaped.
        template = self.get_chat_template(chat_template, tools)
        name, mode = template_name(template), kwargs.pop("validation_mode", None)
        reasoning_effort = kwargs.pop(REASONING_EFFORT, None)
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
                reasoning_effort=reasoning_effort,
                model_settings_builder=self.model_settings_builder,
            )
            for chat in conversations
        ]
        escaper = self._escaper
        with recursion_room():  # transformers copies the data recursively, and tool schemas may be deep
            rendered, generation_indices = render_jinja_template(
                conversations=[escaper.escape(chat.messages) for chat in chats],
                tools=escaper.escape(chats[0].tools),
                documents=escaper.escape(chats[0].documents),
                chat_template=template,
                continue_final_message=continue_final_message and name is None,
                return_assistant_tokens_mask=return_assistant_tokens_mask,
                add_generation_prompt=add_generation_prompt,
                **{
                    **self.special_tokens_map,
                    **escaper.escape(kwargs),
                    **escaper.escape(chats[0].settings),  # the model settings, resolved (v15)
                    **({"chunk_break": CHUNK_BREAK} if tokenize else {}),
                },
            )
        if not tokenize:
            texts = [escaper.unescape(text) for text in rendered]
            return texts if is_batched else texts[0]

        backend = self._chat_backend
        # Offsets are only needed for the masks; without them tokenizers encodes faster.
        encode = backend.encode_batch if return_assistant_tokens_mask else backend.encode_batch_fast
        rows, chunk_break = [], backend.token_to_id(CHUNK_BREAK)
        with panics_as_file_errors(self._source_name):
            encodings = encode(rendered, add_special_tokens=False)
        for i, encoding in enumerate(encodings):
            ids, offsets = encoding.ids, encoding.offsets if return_assistant_tokens_mask else None
            if CHUNK_BREAK in rendered[i]:
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
            **({"response_template": self.response_template} if self.response_template is not None else {}),
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


def _overlap_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap one of the (sorted, disjoint) `spans`, in one pass over both."""
    mask, span = [], 0
    spans = sorted(spans)
    for start, end in offsets:
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        mask.append(int(span < len(spans) and start < end and spans[span][0] < end))
    return mask
