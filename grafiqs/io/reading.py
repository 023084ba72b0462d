"""The check every file the program reads goes through: a regular file, within a size limit, opened non-blocking.

Weights, landmarks, score files, pair lists, protocol tables, configs and images are all opened here
(images through `grafiqs.data.decode`, which turns a refusal into an ImageError for errors.csv). A FIFO,
a device such as `/dev/zero`, a socket or a folder is refused at once instead of blocking or reading
forever, and the type and size come from the opened file itself (fstat), so a link swapped after a
check cannot slip through. Failures are ReadErrors (exit 2: bad input), never mistaken for write errors.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import BinaryIO

from grafiqs.errors import ReadError

DATA_FILE_LIMIT = 8 * 2**30  # bytes read whole into memory (tables, pair lists, .bin sets); weights are opened, not read
TEXT_FILE_LIMIT = 2 * 2**30


def file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def open_regular(path: str | os.PathLike, what: str, limit: int | None = DATA_FILE_LIMIT,
                 follow_links: bool = True) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file of at most `limit` bytes, else a ReadError.

    `follow_links=False` (the program's own state files) refuses a symbolic link instead of reading its target.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise ReadError(what, path, "not found") from None
    except OSError as error:
        reason = "a symbolic link, which the program does not follow here" if error.errno == errno.ELOOP and not \
            follow_links else error.strerror or str(error)
        raise ReadError(what, path, reason) from None
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode):
        os.close(handle)
        raise ReadError(what, path, f"not a regular file ({file_kind(info.st_mode)})")
    if limit is not None and info.st_size > limit:
        os.close(handle)
        raise ReadError(what, path, f"{info.st_size} bytes exceed the limit of {limit}")
    os.set_blocking(handle, True)  # a regular file: reads never block; clear the flag for libraries that read it
    return os.fdopen(handle, "rb")


def read_bytes(path: str | os.PathLike, what: str, limit: int = DATA_FILE_LIMIT, follow_links: bool = True) -> bytes:
    with open_regular(path, what, limit, follow_links) as file:
        try:
            data = file.read(limit + 1)
        except OSError as error:
            raise ReadError(what, path, error.strerror or str(error)) from None
    if len(data) > limit:  # grew while being read
        raise ReadError(what, path, f"more than {limit} bytes")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = TEXT_FILE_LIMIT, encoding: str = "utf-8",
              follow_links: bool = True) -> str:
    try:
        return read_bytes(path, what, limit, follow_links).decode(encoding)
    except UnicodeDecodeError as error:
        raise ReadError(what, path, f"not {encoding} text ({error.reason} at byte {error.start})") from None


def file_digest(path: str | os.PathLike, what: str = "file") -> str:
    """SHA-256 of a regular file's content (weights are named by content, not by path)."""
    digest = hashlib.sha256()
    with open_regular(path, what, limit=None) as file:
        for block in iter(lambda: file.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()
