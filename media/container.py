"""Container sniffing and truncation, from the bytes alone (no demuxer).

`container_truncated` reads the container's own size fields (ISO BMFF boxes, the Matroska
segment, the RIFF chunk) and names a file that ends early: truncated_media. `sniff_container`
names the container family the leading bytes announce (a file FFmpeg cannot open that still
looks like a video is `undecodable`, anything else `not_a_video`).
"""
from __future__ import annotations

import struct
from typing import Optional


ISO_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"moof", b"mfra", b"uuid",
                  b"styp", b"sidx", b"pnot", b"meta", b"prfl", b"junk", b"PICT"}


def sniff_container(data: bytes) -> Optional[str]:
    """The video container family the leading bytes announce, or None."""
    if len(data) >= 8 and data[4:8] in ISO_BMFF_BOXES:
        return "isobmff"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if data[:3] == b"FLV":
        return "flv"
    if data[:4] == b"OggS":
        return "ogg"
    if len(data) >= 377 and data[0] == 0x47 and data[188] == 0x47 and data[376] == 0x47:
        return "mpegts"
    if data[:4] == b"\x00\x00\x01\xba":
        return "mpegps"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def container_truncated(data: bytes) -> Optional[str]:
    """Why the container's own size fields say the file is cut short, or None."""
    kind = sniff_container(data)
    n = len(data)
    if kind == "isobmff":
        pos, seen = 0, set()
        while pos + 8 <= n:
            size, typ = struct.unpack(">I4s", data[pos:pos + 8])
            if size == 1:
                if pos + 16 > n:
                    return f"box header at {pos} cut"
                size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            elif size == 0:          # box runs to the end of the file
                size = n - pos
            if size < 8:
                return None          # not a box layout we understand: let the demuxer judge
            if pos + size > n:
                return f"'{typ.decode('latin-1')}' box at {pos} needs {size} bytes, file has {n - pos}"
            seen.add(typ)
            pos += size
        if pos != n:
            return f"{n - pos} trailing bytes cut inside a box header"
        if b"moov" not in seen and b"moof" not in seen:
            return "no 'moov' box (the index at the end of the file is missing)"
        return None
    if kind == "matroska":
        try:
            pos = 4
            size, pos = _ebml_vint(data, pos)           # EBML header
            pos += size
            if data[pos:pos + 4] != b"\x18\x53\x80\x67":
                return None
            seg_size, body = _ebml_vint(data, pos + 4, unknown_ok=True)
        except IndexError:
            return "cut inside the EBML header"
        if seg_size is not None and body + seg_size > n:
            return f"Matroska segment needs {seg_size} bytes, file has {n - body}"
        return None
    if kind == "avi":
        riff = struct.unpack("<I", data[4:8])[0]
        if 8 + riff > n:
            return f"RIFF chunk needs {riff} bytes, file has {n - 8}"
    return None


def _ebml_vint(data: bytes, pos: int, unknown_ok: bool = False) -> tuple[Optional[int], int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise IndexError("bad EBML size")
    value = first & (0xFF >> length)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    if pos + length > len(data):
        raise IndexError("cut")
    if unknown_ok and value == (1 << (7 * length)) - 1:
        return None, pos + length        # unknown size (live streams)
    return value, pos + length
