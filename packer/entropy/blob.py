"""Bounded byte I/O for ANS blobs, and the coder of small side arrays (per-row/per-column parameters).

Owns: varints/zigzag/float32 fields read with bounds and offsets in every error, the ANS word tail, and
`SideArray`, a tiny self-describing model (constant, categorical with stored counts, or quantized Gaussian)
for integer parameter arrays coded inside the same ANS stream as the data. Must not know about tensors,
models of weights, or torch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import constriction
import numpy as np

from common.errors import CodecError

MAX_SIDE_CAT_SYMBOLS = 64      # side arrays with a wider range use the Gaussian side model
MAX_SIDE_ABS = 1 << 20         # side-array values (row/column indices, grid indices) stay within this
MAX_COUNT = (1 << 40) - 1      # a histogram count never exceeds this


def zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(u: int) -> int:
    return u >> 1 if u % 2 == 0 else -((u + 1) >> 1)


class BlobWriter:
    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> None:
        self.buf.append(int(v) & 0xFF)

    def varint(self, v: int) -> None:
        v = int(v)
        if v < 0:
            raise CodecError(f"internal: varint of negative value {v}")
        while True:
            byte = v & 0x7F
            v >>= 7
            if v:
                self.buf.append(byte | 0x80)
            else:
                self.buf.append(byte)
                return

    def zz(self, v: int) -> None:
        self.varint(zigzag(int(v)))

    def f32(self, v: float) -> None:
        self.buf += struct.pack("<f", v)


class BlobReader:
    """Reads header fields of one blob; every failure names the field and its offset."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def _fail(self, field: str, why: str) -> CodecError:
        return CodecError(f"{self.what}: field {field!r} at offset {self.pos}: {why}; the section is corrupt, "
                          f"re-pack the artifact")

    def u8(self, field: str) -> int:
        if self.pos >= len(self.data):
            raise self._fail(field, "blob ends early")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def varint(self, field: str, max_value: int) -> int:
        v, shift = 0, 0
        start = self.pos
        while True:
            if self.pos >= len(self.data) or self.pos - start > 9:
                raise self._fail(field, "varint is truncated or too long")
            byte = self.data[self.pos]
            self.pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and self.pos - start > 1:
                    raise self._fail(field, "varint is not in its shortest form")
                break
        if v > max_value:
            self.pos = start
            raise self._fail(field, f"value {v} exceeds its bound {max_value}")
        return v

    def zz(self, field: str, lo: int, hi: int) -> int:
        v = unzigzag(self.varint(field, 2 * max(abs(lo), abs(hi)) + 1))
        if not lo <= v <= hi:
            raise self._fail(field, f"value {v} is outside [{lo}, {hi}]")
        return v

    def f32(self, field: str) -> float:
        if self.pos + 4 > len(self.data):
            raise self._fail(field, "blob ends early")
        (v,) = struct.unpack_from("<f", self.data, self.pos)
        self.pos += 4
        return v

    def words(self) -> np.ndarray:
        """The rest of the blob: the ANS stream as little-endian uint32 words."""
        rest = len(self.data) - self.pos
        if rest % 4:
            raise self._fail("ans_words", f"{rest} trailing bytes are not a whole number of 32-bit words")
        words = np.frombuffer(self.data[self.pos:], dtype="<u4").astype(np.uint32)
        if words.size and words[-1] == 0:
            raise self._fail("ans_words", "the last ANS word is zero, which no encoder writes")
        return words


def new_decoder(words: np.ndarray, what: str) -> constriction.stream.stack.AnsCoder:
    try:
        return constriction.stream.stack.AnsCoder(words)
    except Exception as exc:  # noqa: BLE001 - constriction raises plain built-in exception types
        raise CodecError(f"{what}: ANS stream rejected by the decoder ({exc}); re-pack the artifact") from None


def finish_decoder(coder, what: str) -> None:
    """A stream written by our encoder is exactly used up when the last symbol is decoded."""
    if not coder.is_empty():
        raise CodecError(f"{what}: {coder.num_valid_bits()} bits of the ANS stream are left after the last symbol; "
                         f"the section is corrupt, re-pack the artifact")


SENTINEL = 0xA5C3             # models 3 and 4 end their streams with this 16-bit symbol (uniform model)


def encode_sentinel(coder) -> None:
    """Encoded first, so decoded last: a decoder that read past the stream's end (constriction pads with
    zeros and still reports an empty coder) finds another value there."""
    coder.encode_reverse(np.array([SENTINEL], np.int32), constriction.stream.model.Uniform(1 << 16))


def check_sentinel(coder, what: str) -> None:
    v = int(guarded_decode(coder, what, constriction.stream.model.Uniform(1 << 16), 1)[0])
    if v != SENTINEL:
        raise CodecError(f"{what}: the ANS stream does not end with its sentinel ({v:#06x}); the section is "
                         f"corrupt, re-pack the artifact")


def guarded_decode(coder, what: str, *args) -> np.ndarray:
    try:
        return coder.decode(*args)
    except Exception as exc:  # noqa: BLE001 - constriction raises plain built-in exception types
        raise CodecError(f"{what}: ANS decoding failed ({exc}); the section is corrupt") from None


# --- side arrays --------------------------------------------------------------------------------------------
SIDE_CONST, SIDE_CAT, SIDE_GAUSS = 0, 1, 2


@dataclass(frozen=True)
class SideArray:
    """How one integer side array is coded: its value range and, unless constant, a small model."""

    lo: int
    hi: int
    kind: int
    counts: tuple[int, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    def model(self):
        if self.kind == SIDE_CAT:
            return constriction.stream.model.Categorical(np.asarray(self.counts, np.float64), perfect=False)
        return constriction.stream.model.QuantizedGaussian(self.lo, self.hi, self.mean, self.std)

    def symbols(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, np.int32)
        return v - np.int32(self.lo) if self.kind == SIDE_CAT else v

    def values(self, symbols: np.ndarray) -> np.ndarray:
        s = np.asarray(symbols, np.int64)
        return s + self.lo if self.kind == SIDE_CAT else s


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def plan_side(values: np.ndarray) -> SideArray:
    """The cheapest of constant / categorical / Gaussian for `values` (measured by trial coding)."""
    v = np.asarray(values, np.int64)
    if v.size == 0:
        return SideArray(0, 0, SIDE_CONST)
    lo, hi = int(v.min()), int(v.max())
    if max(abs(lo), abs(hi)) > MAX_SIDE_ABS:
        raise CodecError(f"internal: side array value outside ±{MAX_SIDE_ABS}")
    if lo == hi:
        return SideArray(lo, hi, SIDE_CONST)
    options = []
    if hi - lo + 1 <= MAX_SIDE_CAT_SYMBOLS:
        counts = tuple(int(c) for c in np.bincount(v - lo, minlength=hi - lo + 1))
        options.append(SideArray(lo, hi, SIDE_CAT, counts=counts))
    mean, std = _f32(float(v.mean())), float(v.std())
    for mult in (0.8, 1.0, 1.25):
        options.append(SideArray(lo, hi, SIDE_GAUSS, mean=mean, std=_f32(max(std * mult, 0.3))))
    best, best_bits = None, math.inf
    for opt in options:
        bits = side_header_bytes(opt) * 8 + trial_bits(opt.symbols(v), opt.model())
        if bits < best_bits:
            best, best_bits = opt, bits
    return best


def trial_bits(symbols: np.ndarray, model, *model_args) -> int:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(symbols, np.int32), model, *model_args)
    return coder.num_bits()


def write_side(w: BlobWriter, s: SideArray) -> None:
    w.zz(s.lo)
    w.varint(s.hi - s.lo)
    if s.kind == SIDE_CONST:
        return
    w.u8(s.kind)
    if s.kind == SIDE_CAT:
        for c in s.counts:
            w.varint(c)
    else:
        w.f32(s.mean)
        w.f32(s.std)


def side_header_bytes(s: SideArray) -> int:
    w = BlobWriter()
    write_side(w, s)
    return len(w.buf)


def read_side(r: BlobReader, field: str, length: int | None) -> SideArray:
    """One side array's model; `length` (when already known) bounds and checks its counts."""
    lo = r.zz(field + ".lo", -MAX_SIDE_ABS, MAX_SIDE_ABS)
    hi = lo + r.varint(field + ".range", MAX_SIDE_ABS - lo)
    if lo == hi:
        return SideArray(lo, hi, SIDE_CONST)
    kind = r.u8(field + ".kind")
    if kind == SIDE_CAT:
        if hi - lo + 1 > MAX_SIDE_CAT_SYMBOLS:
            raise r._fail(field, f"categorical side array spans {hi - lo + 1} values (at most "
                                 f"{MAX_SIDE_CAT_SYMBOLS})")
        bound = MAX_COUNT if length is None else length
        counts = tuple(r.varint(field + ".count", bound) for _ in range(hi - lo + 1))
        if length is not None and sum(counts) != length:
            raise r._fail(field, f"side counts sum to {sum(counts)}, expected {length}")
        return SideArray(lo, hi, SIDE_CAT, counts=counts)
    if kind == SIDE_GAUSS:
        mean, std = r.f32(field + ".mean"), r.f32(field + ".std")
        if not (math.isfinite(mean) and math.isfinite(std) and 0.0 < std < 1e7):
            raise r._fail(field, f"Gaussian side model has mean {mean}, std {std}")
        return SideArray(lo, hi, SIDE_GAUSS, mean=mean, std=std)
    raise r._fail(field + ".kind", f"unknown side-array kind {kind}")


def decode_side(coder, s: SideArray, length: int, what: str) -> np.ndarray:
    if length == 0:
        return np.zeros(0, np.int64)
    if s.kind == SIDE_CONST:
        return np.full(length, s.lo, np.int64)
    return s.values(guarded_decode(coder, what, s.model(), length))


# --- blob frame shared by the models -----------------------------------------------------------------------
MODEL_CONST, MODEL_TABLES, MODEL_PARAM, MODEL_GRID, MODEL_REFS = 0, 1, 2, 3, 4
MODEL_NAMES = {MODEL_CONST: "const", MODEL_TABLES: "tables", MODEL_PARAM: "param", MODEL_GRID: "grid",
               MODEL_REFS: "grid-refs"}


def header(model: int, lo: int, hi: int) -> BlobWriter:
    w = BlobWriter()
    w.u8(model)
    w.u8(lo + 128)
    w.u8(hi + 128)
    return w


def finish(w: BlobWriter, coder) -> bytes:
    """Header bytes followed by the coder's words, little-endian."""
    return bytes(w.buf) + np.asarray(coder.get_compressed(), dtype="<u4").tobytes()


def check_range(arr: np.ndarray, lo: int, hi: int, field: str, what: str) -> None:
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise CodecError(f"{what}: decoded {field} spans [{arr.min()}, {arr.max()}], outside [{lo}, {hi}]; "
                         f"the section is corrupt")
