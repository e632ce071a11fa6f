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
