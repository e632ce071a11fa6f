import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


# issue 10: everything the suite caches (tiny_model() builds, the demo's checkpoints) goes into one directory of this
# session, removed at its end (and, for a session that was killed, by the next one): a test run never writes into the
# user's cache nor leaves folders in /tmp.
def _remove_caches_of_dead_sessions() -> None:
    for folder in Path(tempfile.gettempdir()).glob("hf-mistral-kit-tests-*-*"):
        try:
            os.kill(int(folder.name.split("-")[4]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


_remove_caches_of_dead_sessions()
SESSION_CACHE = Path(tempfile.mkdtemp(prefix=f"hf-mistral-kit-tests-{os.getpid()}-"))
os.environ["HF_MISTRAL_KIT_CACHE"] = str(SESSION_CACHE)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402

# The property tests draw the same examples on every run (the "ci" default), so that a red run means a change broke
# something, not that this run's random draw found an old gap; `HYPOTHESIS_PROFILE=explore` draws new ones each run
# (the way to look for gaps; a failure it finds is kept as a test).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from hf_mistral_kit import load_tokenizer, reference_tokenizer_file  # noqa: E402


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", params=["v1", "v3"])
def version(request):
    return request.param


@pytest.fixture(scope="session")
def kit_tokenizers():
    return {v: load_tokenizer(reference_tokenizer_file(v)) for v in ("v1", "v2", "v3")}


@pytest.fixture(scope="session")
def reference_tokenizers():
    return {v: MistralTokenizer.from_file(str(reference_tokenizer_file(v))) for v in ("v1", "v2", "v3")}


# issue 12: tokenizer v7 and tekken files (tests/tekken_files.py), the kit's tokenizer and mistral-common's for each,
# built on first use and kept for the session.
@pytest.fixture(scope="session")
def mistral_file(tmp_path_factory):
    """name ("v7", "tekken-v3", "tekken-v13", ...) -> the tokenizer file, shipped or derived (written once)."""
    from tekken_files import SHIPPED, derive

    files = dict(SHIPPED)

    def file(name):
        if name not in files:
            files[name] = derive(name, tmp_path_factory.mktemp("tekken"))
        return files[name]

    return file


@pytest.fixture(scope="session")
def tokenizer_pair(mistral_file):
    """name -> (the kit's tokenizer, mistral-common's MistralTokenizer) of that file, loaded once."""
    pairs = {}

    def pair(name):
        if name not in pairs:
            path = mistral_file(name)
            pairs[name] = (load_tokenizer(path), MistralTokenizer.from_file(str(path)))
        return pairs[name]

    return pair


# issue 5: the command line and the examples run against one cache of tiny checkpoints per test session.
@pytest.fixture(scope="session")
def kit_cache():
    """This session's $HF_MISTRAL_KIT_CACHE (removed when the session ends)."""
    return SESSION_CACHE


@pytest.fixture(scope="session")
def cli_env(kit_cache):
    """The environment subprocesses run in: offline, the session's cache, unbuffered output."""
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


# The command line in this process (tests/test_cli.py, tests/test_cli_chat_tools.py).
@pytest.fixture
def run(monkeypatch, capsys):
    """`hf-mistral-kit ARGS` in this process, for the many error paths where a subprocess would only add seconds of
    imports: the same `main()` the console script calls, with stdin from `input`, as a CompletedProcess."""
    from hf_mistral_kit.cli import main

    def run(*args: str, input: str = "") -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        try:
            code = main(list(args))
        except SystemExit as exited:  # argparse
            code = exited.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run
