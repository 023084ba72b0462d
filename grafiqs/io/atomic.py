"""Writes that readers never see half done: a temporary file beside the target, renamed into place.

`atomic_write_with` returns the SHA-256 and size of what it wrote, so the ledger
(`grafiqs.io.ledger`) can record the content itself, not only the name.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable

TEMPORARY_SUFFIX = ".tmp"
_FOLDERS: dict[Path, object] = {}  # resolved folder -> its OutputFolder (grafiqs.io.ledger), in this process


def register_folder(folder: str | Path, ledger) -> None:
    """Every later write under `folder` asks `ledger.before_replace(name, sha256, size)` before its rename."""
    _FOLDERS[Path(folder).resolve()] = ledger


def _ledger_of(path: Path):
    """(the OutputFolder of the nearest registered folder above `path`, the name of `path` in it), or None."""
    if not _FOLDERS:
        return None
    parent = path.parent.resolve()
    for folder in (parent, *parent.parents):
        if folder in _FOLDERS:
            return _FOLDERS[folder], str((parent / path.name).relative_to(folder))
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's private 0600 is not what users expect


class _HashingWriter(io.RawIOBase):
    """A binary file that hashes and counts what passes through it."""

    def __init__(self, file):
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def temporary_name(name: str) -> str:
    """A short hidden temporary name for `name`: a 255-byte file name must not grow past the file system's limit."""
    stem = name.encode("utf-8", "surrogateescape")[:40].decode("utf-8", "ignore")
    return f".{stem}.{os.urandom(6).hex()}{TEMPORARY_SUFFIX}"


def atomic_write_with(path: str | Path, write: Callable, before_rename: Callable | None = None) -> tuple[str, int]:
    """`write(binary file)` into a temporary file beside `path`, then rename it into place.

    Returns (sha256, size) of the content. Under a folder the ledger registered, the file it would replace
    is checked and the new content recorded before the rename (`before_rename(sha256, size)` runs there too).
    """
    path = Path(path)
    ledger = _ledger_of(path)
    temporary = path.parent / temporary_name(path.name)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        with os.fdopen(handle, "wb") as file:
            hashing = _HashingWriter(file)
            write(hashing)
            file.flush()
        sha256, size = hashing.digest.hexdigest(), hashing.size
        if ledger is not None:
            ledger[0].before_replace(ledger[1], sha256, size)
        if before_rename is not None:
            before_rename(sha256, size)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return sha256, size


def remove_own(path: str | Path) -> bool | None:
    """Delete `path` if it lies under a registered folder and is still exactly a file the program wrote there (the
    ledger records the removal); False, the file kept, if it is someone else's; None outside registered folders."""
    found = _ledger_of(Path(path))
    if found is None:
        return None
    ledger, name = found
    if not ledger.owns(name):
        return False
    ledger.remove({name})
    return True


def atomic_write_bytes(path: str | Path, data: bytes) -> tuple[str, int]:
    return atomic_write_with(path, lambda file: file.write(data))


def atomic_write_text(path: str | Path, text: str) -> tuple[str, int]:
    return atomic_write_bytes(path, text.encode("utf-8"))
