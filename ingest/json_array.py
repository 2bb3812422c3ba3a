"""The LLaVA-style JSON reader: the elements of a top-level array, streamed (a lone object is one row).

An element that is not JSON but is delimited by its brackets (counted outside strings, no
recursion) costs one row and reading goes on; one too deep for the parser likewise. Only
garbage between elements, or an element larger than `ingest.max_row_bytes`, stops the
reader, and then the bytes after it are counted as unread.
"""
from __future__ import annotations

import json
import re
from typing import BinaryIO, Iterator, Optional

from ingest import files
from ingest.files import FileTask, RawRow, ReadState, loads_row, make_row, open_stored, parsed_row, read_step
from schemas.reasons import Reason


def read_json_array(task: FileTask, state: Optional[ReadState] = None) -> Iterator[RawRow]:
    """Stream the elements of a top-level JSON array (a lone object is one row); ref `relpath:INDEX`."""
    state = state or ReadState(task)
    decoder = json.JSONDecoder()
    with open_stored(task.path, state) as f:
        stream = _Utf8Stream(f)

        def stop(index: int, reason: Reason, detail: str) -> RawRow:
            unread = state.unread(stream.buffered_bytes())
            return make_row(task, f"{task.relpath}:{index}", error=(reason, f"{detail}; elements from {index} on "
                        f"are not read ({unread} bytes)"), unread=unread)

        try:
            first = stream.peek_non_ws()
        except UnicodeDecodeError as e:
            yield stop(0, Reason.INVALID_UTF8, str(e))
            return
        if first is None:
            return  # an empty file holds no rows
        if first != "[":
            # A single JSON object file is one row.
            data = stream.read_all(task.max_row_bytes)
            if data is None:
                yield make_row(task, f"{task.relpath}:0", error=(Reason.ROW_TOO_LARGE, "file is one value "
                           f"larger than ingest.max_row_bytes={task.max_row_bytes}"))
                return
            raw = data.encode("utf-8", "surrogatepass")
            payload, error = loads_row(data)
            yield (make_row(task, f"{task.relpath}:0", error=error, raw=raw) if error is not None
                   else parsed_row(task, f"{task.relpath}:0", payload, raw))
            return
        stream.advance(1)
        index = 0
        expect_value = True
        while True:
            try:
                ch = stream.peek_non_ws()
            except UnicodeDecodeError as e:
                yield stop(index, Reason.INVALID_UTF8, str(e))
                return
            if ch is None:
                yield make_row(task, f"{task.relpath}:{index}", error=(Reason.MALFORMED_JSON,
                           "file ends inside the array (no closing ']')"))
                return
            if ch == "]" and (index == 0 or not expect_value):
                return
            if not expect_value:
                if ch != ",":
                    yield stop(index, Reason.MALFORMED_JSON, f"expected ',' or ']' after element {index - 1}, "
                               f"found {ch!r}")
                    return
                stream.advance(1)
                expect_value = True
                continue
            value, raw, err = stream.decode_value(decoder, task.max_row_bytes)
            ref = f"{task.relpath}:{index}"
            raw_bytes = None if raw is None else raw.encode("utf-8", "surrogatepass")
            if err is None:
                yield parsed_row(task, ref, value, raw_bytes)
            elif err[0] == "too_deep":
                # Delimited by counting brackets outside strings, but too deep to parse.
                yield make_row(task, ref, error=(Reason.TOO_DEEPLY_NESTED, err[1]), raw=raw_bytes)
            elif err[0] == "malformed":
                # A bracketed element that is not valid JSON: it costs one row, reading goes on.
                yield make_row(task, ref, error=(Reason.MALFORMED_JSON, err[1]), raw=raw_bytes)
            elif err[0] == "truncated":
                yield make_row(task, ref, error=(Reason.MALFORMED_JSON, f"the file ends inside element {index}: "
                           f"{err[1]}"), raw=raw_bytes, raw_size=len(raw_bytes))
                return
            else:
                reason = Reason.ROW_TOO_LARGE if err[0] == "too_large" else Reason.MALFORMED_JSON
                detail = (f"element {index} is larger than ingest.max_row_bytes={task.max_row_bytes}"
                          if err[0] == "too_large" else err[1])
                yield stop(index, reason, detail)
                return
            index += 1
            expect_value = False


_JSON_SPECIAL = re.compile(r'["\\\[\]{}]')


class _Utf8Stream:
    """A growing text buffer over a binary file, for incremental JSON decoding (a leading
    byte-order mark is skipped: the utf-8-sig codec)."""

    def __init__(self, f: BinaryIO) -> None:
        import codecs

        self._read = read_step(f)
        self._dec = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._read(files.CHUNK)
        if not chunk:
            self._eof = True
            self._buf += self._dec.decode(b"", final=True)
            return False
        if self._pos > files.CHUNK:
            self._buf, self._pos = self._buf[self._pos:], 0
        self._buf += self._dec.decode(chunk)
        return True

    def buffered_bytes(self) -> int:
        """UTF-8 bytes read from the file but not yet parsed."""
        return len(self._buf[self._pos:].encode("utf-8", "surrogatepass"))

    def peek_non_ws(self) -> Optional[str]:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n\ufeff":   # BOMs of joined files
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return None

    def advance(self, n: int) -> None:
        self._pos += n

    def read_all(self, limit: int) -> Optional[str]:
        while self._fill():
            if len(self._buf) - self._pos > limit:
                return None
        return self._buf[self._pos:]

    def decode_value(self, decoder: json.JSONDecoder, limit: int):
        """(value, raw text, None), or (None, raw text or None, (kind, message)) where kind is
        'too_deep' or 'malformed' (an array / object delimited by its brackets: one bad row,
        reading goes on), 'truncated' (it runs to the end of the file), 'too_large' or 'stop'
        (nothing after it can be delimited)."""
        while True:
            try:
                value, end = decoder.raw_decode(self._buf, self._pos)
            except (ValueError, RecursionError) as e:
                if self._buf[self._pos] in "[{":
                    return self._bracketed(decoder, limit, e)
                if len(self._buf) - self._pos > limit:
                    return None, None, ("too_large", "")
                try:
                    more = self._fill()
                except UnicodeDecodeError as ue:
                    return None, None, ("stop", f"invalid UTF-8: {ue}")
                if more:
                    continue
                return None, None, ("stop", str(e))
            # A value that ends exactly at the buffer's end may be a number cut mid-way.
            if end == len(self._buf) and not self._eof:
                if self._fill():
                    continue
            if end - self._pos > limit:
                return None, None, ("too_large", "")
            raw = self._buf[self._pos:end]
            self._pos = end
            return value, raw, None

    def _bracketed(self, decoder: json.JSONDecoder, limit: int, first: Exception):
        """An array / object the decoder rejected (or that needs more text): delimit it by its
        brackets, then parse exactly that text."""
        try:
            end = self._container_end(limit)
        except UnicodeDecodeError as ue:
            return None, None, ("stop", f"invalid UTF-8: {ue}")
        if end is None:
            if self._eof and len(self._buf) - self._pos <= limit:
                raw = self._buf[self._pos:]
                self._pos = len(self._buf)
                return None, raw, ("truncated", str(first))
            return None, None, ("too_large", "")
        raw = self._buf[self._pos:end]
        self._pos = end
        try:
            value, stop = decoder.raw_decode(raw)
        except RecursionError:
            return None, raw, ("too_deep", "nesting too deep for the JSON parser (RecursionError)")
        except ValueError as e:
            return None, raw, ("malformed", str(e))
        if stop != len(raw):
            return None, raw, ("malformed", f"extra data inside the element at character {stop}")
        return value, raw, None

    def _container_end(self, limit: int) -> Optional[int]:
        """End of the array / object starting at the cursor, by counting brackets outside
        strings (no recursion); None if it runs past `limit` characters or the file."""
        depth, in_string, rel = 0, False, 0    # rel: offset from the cursor (_fill may move the buffer)
        while True:
            m = _JSON_SPECIAL.search(self._buf, self._pos + rel)
            if m is None or (m.group() == "\\" and m.end() >= len(self._buf) and not self._eof):
                if len(self._buf) - self._pos > limit:
                    return None
                if self._fill():
                    continue
                if m is None:
                    return None
            ch, rel = m.group(), m.end() - self._pos
            if in_string:
                if ch == "\\":
                    rel += 1        # the escaped character
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return self._pos + rel if rel <= limit else None
