"""The reference for the compiled fast-path check (flows/transform/_fastcheck.c): the same rules,
stated with numpy, as the loader used them before the check was compiled.

`FastLineCheck().lines(chunk)` must equal `flows.transform.fast_lines(chunk)` for every chunk of bytes
(tests/test_fastcheck_native.py). The rules and their reasons: flows/transform/fastcheck.py.

numpy finds the line ends and commas; then each field is checked as a few 8-byte words (SWAR), so the
cost is a few passes over the bytes, not a Python step per line.
"""

from __future__ import annotations

import numpy as np

from flows.transform.fields import MAX_NUMBER_CHARS

MAX_FAST_LINE_BYTES = 65_536  # <= MAX_FIELD_CHARS and < MAX_RECORD_BYTES: no length rule is left to check
_LF, _CR, _COMMA, _MINUS = 10, 13, 44, 45
_FIELDS = 9
_NUMBERS, _UUID = [2, 3, 6, 7], 8  # field positions in the canonical order; 6 is the price
_DECIMAL_POINT_IN = np.array([False, False, True, False])
_PAD = bytes(32)  # words may be read past the end of the chunk

_ZEROS = np.uint64(0x3030303030303030)
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_PLUS_0X76 = np.uint64(0x7676767676767676)
_DOTS_AFTER_XOR = np.uint64(0x1E1E1E1E1E1E1E1E)  # "." ^ "0"
_BYTE_MASKS = np.array([(1 << (8 * m)) - 1 for m in range(9)], dtype=np.uint64)  # the low m bytes


def _word(text: bytes) -> np.uint64:
    return np.uint64(int.from_bytes(text, "little"))


# "YYYY-MM-DD HH:MM:SS UTC," as three words; "0" marks a digit, anything else a literal byte
_TIMESTAMP_WORDS = [(b"0000-00-", 0), (b"00 00:00", 8), (b":00 UTC,", 16)]


def _digits_only(x: np.ndarray) -> np.ndarray:
    """Per word: True when every byte of x (already XORed with "0"s) is 0-9. A byte >= 0x8A can carry
    into the next one, which can only fail a good byte, never pass a bad one."""
    return ((x | (x + _PLUS_0X76)) & _HIGH) == 0


def _zero_bytes(y: np.ndarray) -> np.ndarray:
    """Per byte of y: 0xFF where the byte is 0, else 0x00 (exact, no carries between bytes)."""
    high = ~(((y & _LOW7) + _LOW7) | y | _LOW7)
    return (high >> np.uint64(7)) * np.uint64(0xFF)


def _template_ok(words: np.ndarray, template: bytes) -> np.ndarray:
    literal = bytes(0 if b == ord("0") else 0xFF for b in template)
    mask, expected = _word(literal), _word(template) & _word(literal)
    digits = (words & ~mask) | (_ZEROS & mask)
    return ((words & mask) == expected) & _digits_only(digits ^ _ZEROS)


class _Chunk:
    """A chunk's lines and fields as arrays of positions (scratch buffers reused across chunks)."""

    def __init__(self, chunk: bytes, scratch: _Scratch):
        self.bytes = np.frombuffer(chunk, np.uint8)
        self.words = scratch.words(chunk)
        self.flags = scratch.flags(len(chunk))
        np.equal(self.bytes, _LF, out=self.flags)
        ends = np.flatnonzero(self.flags)
        if not chunk.endswith(b"\n"):
            ends = np.append(ends, len(chunk))  # the file's last line, without its LF
        self.ends = ends
        self.starts = np.empty(len(ends), np.int64)
        self.starts[:1] = 0
        self.starts[1:] = ends[:-1] + 1

    def field_bounds(self, content_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(starts, ends) of the 9 fields of every line, or None unless every line has 8 commas."""
        np.equal(self.bytes, _COMMA, out=self.flags)
        commas = np.flatnonzero(self.flags)
        n = len(self.ends)
        if len(commas) != (_FIELDS - 1) * n:
            return None
        c = commas.reshape(n, _FIELDS - 1)
        # the 8i-th comma not before line i and the (8i+7)-th before its end: exactly 8 in each line
        if (c[:, 0] < self.starts).any() or (c[:, -1] >= content_ends).any():
            return None
        starts = np.empty((n, _FIELDS), np.int64)
        ends = np.empty((n, _FIELDS), np.int64)
        starts[:, 0], starts[:, 1:] = self.starts, c + 1
        ends[:, :-1], ends[:, -1] = c, content_ends
        return starts, ends


class _Scratch:
    """Buffers one reader reuses for every chunk: fresh megabyte arrays would cost page faults."""

    def __init__(self) -> None:
        self._padded = bytearray()
        self._flags = np.empty(0, bool)

    def words(self, chunk: bytes) -> np.ndarray:
        """The chunk as overlapping little-endian 8-byte words, one starting at every byte (zero padded)."""
        size = len(chunk) + len(_PAD)
        if len(self._padded) < size:
            self._padded = bytearray(size + (size >> 3))
        self._padded[: len(chunk)] = chunk
        self._padded[len(chunk) : size] = _PAD
        return np.ndarray((size - 7,), dtype="<u8", buffer=self._padded, strides=(1,))

    def flags(self, size: int) -> np.ndarray:
        if len(self._flags) < size:
            self._flags = np.empty(size + (size >> 3), bool)
        return self._flags[:size]


def _timestamps_ok(chunk: _Chunk, starts: np.ndarray, ends: np.ndarray) -> bool:
    if (ends - starts != 23).any():
        return False
    words = [chunk.words[starts + offset] for _, offset in _TIMESTAMP_WORDS]
    if not all(_template_ok(w, t).all() for w, (t, _) in zip(words, _TIMESTAMP_WORDS, strict=True)):
        return False
    hour = _two_digits(words[1], 3)
    second = _two_digits(words[2], 1)
    return bool((hour <= 23).all() and (second <= 59).all())


def _two_digits(words: np.ndarray, byte: int) -> np.ndarray:
    """The number written by the two digit bytes at `byte` and `byte + 1` of each word."""
    tens = (words >> np.uint64(8 * byte)) & np.uint64(0xFF)
    units = (words >> np.uint64(8 * byte + 8)) & np.uint64(0xFF)
    return (tens * np.uint64(10) + units - np.uint64(ord("0") * 11)).astype(np.int64)


def _numbers_ok(chunk: _Chunk, starts: np.ndarray, ends: np.ndarray, decimal_point: np.ndarray) -> bool:
    """Optional leading '-', then digits (and '.' where decimal_point), at most MAX_NUMBER_CHARS,
    first and last a digit. Other arrangements ("1.2.3", "1-2") are refused by COPY itself."""
    length = ends - starts
    if (length < 1).any() or (length > MAX_NUMBER_CHARS).any():
        return False
    first = chunk.bytes[starts]
    negative = first == _MINUS
    body_first = chunk.bytes[np.minimum(starts + negative, ends - 1)]
    last = chunk.bytes[ends - 1]
    if not (_is_digit(body_first) & _is_digit(last) & ((length > 1) | ~negative)).all():
        return False
    if negative.any():  # the sign counts as a digit: read the word from after it
        starts, length = starts + negative, length - negative
    for k in range(3):
        if k:  # only the numbers that reach this word
            longer = np.flatnonzero(length > 8 * k)
            starts, length, decimal_point = starts[longer], length[longer], decimal_point[longer]
        x = (chunk.words[starts + 8 * k] ^ _ZEROS) & _BYTE_MASKS[np.minimum(length - 8 * k, 8)]
        x &= ~(_zero_bytes(x ^ _DOTS_AFTER_XOR) & decimal_point)
        if not _digits_only(x).all():
            return False
    return True


def _decimal_points(lines: int) -> np.ndarray:
    """Per number of _NUMBERS (line-major): all-ones where a '.' may appear (the price)."""
    return np.where(np.tile(_DECIMAL_POINT_IN, lines), ~np.uint64(0), np.uint64(0))


def _is_digit(b: np.ndarray) -> np.ndarray:
    return (b - np.uint8(ord("0"))) <= np.uint8(9)


def _uuids_ok(chunk: _Chunk, starts: np.ndarray, ends: np.ndarray) -> bool:
    length = ends - starts
    full = length == 36
    if not (full | (length == 0)).all():
        return False
    s = starts[full]
    return all((chunk.bytes[s + i] == _MINUS).all() for i in (8, 13, 18, 23))


class FastLineCheck:
    """One per reader: `lines(chunk)` is the number of records in `chunk` (whole lines of a
    canonical-order file; the file's last line may lack its LF) when COPY reads each line as the
    careful path would, else None."""

    def __init__(self) -> None:
        self._scratch = _Scratch()

    def lines(self, chunk: bytes) -> int | None:
        if not chunk:
            return 0
        if b'"' in chunk:
            return None
        return _check(_Chunk(chunk, self._scratch), chunk)


def _check(lines: _Chunk, chunk: bytes) -> int | None:
    content_ends = lines.ends
    if b"\r" in chunk:
        before = lines.ends - 1
        crlf = (before >= lines.starts) & (lines.ends < len(chunk)) & (lines.bytes[np.maximum(before, 0)] == _CR)
        if chunk.count(b"\r") != int(crlf.sum()):
            return None  # a CR that is not the first half of a CRLF
        content_ends = lines.ends - crlf.astype(np.int64)
    if ((content_ends - lines.starts) > MAX_FAST_LINE_BYTES).any():
        return None
    bounds = lines.field_bounds(content_ends)
    if bounds is None:
        return None
    starts, ends = bounds
    ok = (
        _timestamps_ok(lines, starts[:, 0], ends[:, 0])
        and (ends[:, 1] > starts[:, 1]).all()
        and _numbers_ok(lines, starts[:, _NUMBERS].ravel(), ends[:, _NUMBERS].ravel(), _decimal_points(len(starts)))
        and _uuids_ok(lines, starts[:, _UUID], ends[:, _UUID])
    )
    return len(lines.ends) if ok else None
