"""Fast sequential tar reading and writing for webdataset shards (regular files only).

Python's tarfile spends most of a reshard parsing headers; here a header is parsed with a few slices. Reads
ustar / GNU / pax archives (GNU long names 'L' and pax 'path' records honoured; directories, links and global
pax headers skipped); checksums are verified. Writes plain ustar members (name <= 100 bytes, mode 0644,
mtime 0), which tarfile and webdataset read.
"""
from __future__ import annotations

from typing import BinaryIO
from collections.abc import Iterator

BLOCK = 512
_ZERO = bytes(BLOCK)


class TarFormatError(Exception):
    pass


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for big numbers
        n = int.from_bytes(field[1:], "big")
        return n
    s = field.split(b"\0", 1)[0].strip()
    return int(s, 8) if s else 0


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    computed = sum(header[:148]) + sum(header[156:]) + 8 * 32
    return stored == computed


def _pax_path(data: bytes) -> str | None:
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        record = data[sp + 1: pos + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        pos += length
    return None


def iter_members(f: BinaryIO, source: str = "") -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a tar stream, in order. Raises TarFormatError on damage."""
    long_name: str | None = None
    while True:
        header = f.read(BLOCK)
        if not header or header == _ZERO:
            return
        if len(header) < BLOCK:
            raise TarFormatError(f"{source}: truncated header")
        if not _checksum_ok(header):
            raise TarFormatError(f"{source}: bad header checksum")
        size = _octal(header[124:136])
        kind = header[156:157]
        data = f.read(size)
        if len(data) < size:
            raise TarFormatError(f"{source}: truncated member data")
        pad = (-size) % BLOCK
        if pad:
            f.read(pad)
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if kind not in (b"0", b"\0", b"7"):  # directories, links, global pax headers...
            long_name = None
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
                if prefix:
                    name = f"{prefix}/{name}"
        yield name, data


def member_header(name: str, size: int) -> bytes:
    """A ustar header block for a regular file `name` of `size` bytes (mode 0644, mtime 0, uid/gid 0)."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    h = bytearray(BLOCK)
    h[0:len(raw)] = raw
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def write_member(f: BinaryIO, name: str, data: bytes) -> None:
    f.write(member_header(name, len(data)))
    f.write(data)
    pad = (-len(data)) % BLOCK
    if pad:
        f.write(bytes(pad))


def finish(f: BinaryIO) -> None:
    """End-of-archive marker: two zero blocks (tarfile also pads to a 10 KiB record; readers do not need it)."""
    f.write(_ZERO * 2)
