"""Shared pytest fixtures: the real-data folder beside the repository, and small session-scoped data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository root (see its README.md); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA.resolve()} is absent (a fresh clone has none)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_docs():
    """The embedded default corpus, built once per session."""
    from core.corpus import default_corpus

    return default_corpus()


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory, default_docs):
    """A 400-piece tokenizer trained with the project's settings on a small slice of the default corpus."""
    from core.tokenizer import Tokenizer, train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "small_400_bpe.model"
    train_tokenizer((d.text for d in default_docs[:80]), path, vocab_size=400)
    return Tokenizer.load(path)


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for tiny models: on a shared 2-core machine thread hand-offs cost more than
    they save. Modules opt in with pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
