import pytest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from hf_mistral_kit import load_tokenizer, reference_tokenizer_file


@pytest.fixture(scope="session", params=["v1", "v3"])
def version(request):
    return request.param


@pytest.fixture(scope="session")
def kit_tokenizers():
    return {v: load_tokenizer(reference_tokenizer_file(v)) for v in ("v1", "v2", "v3")}


@pytest.fixture(scope="session")
def reference_tokenizers():
    return {v: MistralTokenizer.from_file(str(reference_tokenizer_file(v))) for v in ("v1", "v2", "v3")}


# issue 5: the command line and the examples run against one cache of tiny checkpoints per test session.
@pytest.fixture(scope="session")
def kit_cache(tmp_path_factory):
    """An empty $HF_MISTRAL_KIT_CACHE for this session (the demo test builds the tiny checkpoints into it)."""
    return tmp_path_factory.mktemp("hf-mistral-kit-cache")


@pytest.fixture(scope="session")
def cli_env(kit_cache):
    """The environment subprocesses run in: offline, the session's cache, unbuffered output."""
    import os

    return {
        **os.environ,
        "HF_MISTRAL_KIT_CACHE": str(kit_cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def tiny_checkpoints(kit_cache):
    """The demo's tiny Mistral (v3 tokenizer) and Mixtral (v1 tokenizer), built once into the session's cache."""
    from hf_mistral_kit.cli.demo import tiny_checkpoint

    return {kind: tiny_checkpoint(kind, root=kit_cache) for kind in ("mistral", "mixtral")}
