"""SentencePiece tokenizers: deterministic training with Parameter Golf's settings, loading, byte tables.

Owns the tokenizer file (its identity is the sha256 of the .model bytes) and the per-piece byte tables used
by the bits-per-byte metric. The bpb formula itself lives in core/bpb.py; this module must not compute it.
Training writes only the requested .model file (atomically) and never touches the working directory.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from common.atomic import write_bytes_atomic
from common.errors import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MIN_VOCAB_SIZE = 4 + 256 + 1  # special pieces, byte-fallback pieces, at least one learned piece
MAX_SENTENCE_BYTES = 8192
LEADING_SPACE = "\u2581"  # SentencePiece's visible space, '▁'

# Parameter Golf's sp1024 settings (as recorded in the official fineweb_1024_bpe.model trainer spec:
# BPE, character_coverage 0.999, split_digits, byte_fallback, hard_vocab_limit off, nmt_nfkc, no dummy
# prefix, pad/bos/eos/unk = 0/1/2/3), plus what makes training reproducible: one thread, every sentence.
TRAINER_SETTINGS = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "hard_vocab_limit": False,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": PAD_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "unk_id": UNK_ID,
    "max_sentence_length": MAX_SENTENCE_BYTES,
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "num_threads": 1,
    "minloglevel": 2,
}


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    """Training sentences: paragraphs (split at blank lines); a paragraph longer than MAX_SENTENCE_BYTES is
    split into lines, and a longer line into pieces, so that SentencePiece never drops text as too long."""
    for text in texts:
        for para in text.split("\n\n"):
            if not para.strip():
                continue
            if len(para.encode("utf-8")) <= MAX_SENTENCE_BYTES:
                yield para
                continue
            for line in para.split("\n"):
                # MAX_SENTENCE_BYTES // 4 characters are at most MAX_SENTENCE_BYTES UTF-8 bytes
                step = MAX_SENTENCE_BYTES // 4
                for i in range(0, len(line), step):
                    if line[i : i + step].strip():
                        yield line[i : i + step]


def train_tokenizer(texts: Iterable[str], model_path: Path, vocab_size: int = 1024) -> Path:
    """Train a BPE SentencePiece model on `texts` and write it to `model_path` atomically.

    Deterministic: the same texts give a byte-identical .model file. Nothing else is written.
    """
    if vocab_size < MIN_VOCAB_SIZE or vocab_size > 65536:
        raise DataError(f"vocab_size must be in [{MIN_VOCAB_SIZE}, 65536] (4 special pieces + 256 byte "
                        f"pieces + learned pieces; shards hold uint16), got {vocab_size}")
    model_path = Path(model_path)
    sentences = _sentences(texts)
    first = next(sentences, None)
    if first is None:
        raise DataError(f"no text to train the tokenizer {model_path} on")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chain(first, sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            **TRAINER_SETTINGS,
        )
    except RuntimeError as exc:
        raise DataError(f"SentencePiece training for {model_path} failed: {exc}") from exc
    model_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(model_path, buffer.getvalue())
    return model_path


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


@dataclass(frozen=True)
class ByteTables:
    """Per-piece tables for counting UTF-8 bytes, built as Parameter Golf's build_sentencepiece_luts does.

    base_bytes[i]: UTF-8 length of piece i without its leading '▁' (1 for byte pieces, 0 for control,
    unknown and unused pieces). has_leading_space[i]: the piece starts with '▁' (worth one more byte unless
    it follows a boundary). is_boundary[i]: control, unknown or unused piece (and table padding).
    """

    base_bytes: np.ndarray  # int16 [V]
    has_leading_space: np.ndarray  # bool [V]
    is_boundary: np.ndarray  # bool [V]


class Tokenizer:
    """A loaded SentencePiece model, identified by the sha256 of its file."""

    def __init__(self, path: Path, model_bytes: bytes, processor: spm.SentencePieceProcessor) -> None:
        self.path = Path(path)
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self._sp = processor

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read tokenizer {path}: {exc}; pass a SentencePiece .model file") from exc
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except (RuntimeError, OSError, TypeError) as exc:
            raise DataError(f"{path} is not a SentencePiece model ({exc}); pass a .model file") from exc
        if sp.vocab_size() <= 0:
            raise DataError(f"{path} is not a SentencePiece model (no pieces); pass a .model file")
        return cls(path, data, sp)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.vocab_size())

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def byte_tables(self, vocab_size: int | None = None) -> ByteTables:
        """Tables of max(tokenizer vocab, `vocab_size`) rows; rows past the tokenizer's pieces are boundary
        tokens of 0 bytes (a model head larger than the tokenizer, as Parameter Golf allows)."""
        sp = self._sp
        n = self.vocab_size
        size = max(n, vocab_size or 0)
        base = np.zeros(size, dtype=np.int16)
        space = np.zeros(size, dtype=np.bool_)
        boundary = np.ones(size, dtype=np.bool_)
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue
            boundary[i] = False
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(LEADING_SPACE):
                space[i] = True
                piece = piece[1:]
            base[i] = len(piece.encode("utf-8"))
        for arr in (base, space, boundary):
            arr.setflags(write=False)
        return ByteTables(base_bytes=base, has_leading_space=space, is_boundary=boundary)
