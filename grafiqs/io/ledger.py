"""Folders the program writes into, and the rule that keeps everyone else's files safe there.

The program never deletes or replaces a file unless it is still exactly what the program wrote.
Every folder it writes results into keeps a ledger, `.grafiqs/written.jsonl`: one line per file
written, with the file's name, size and SHA-256, appended *before* the file is renamed into place
(so a run killed at any moment leaves no file of its own unrecorded). A file counts as the
program's only while its content has a digest the ledger recorded for its name; a name alone is
no proof. A run refuses, before it creates anything, when a file it would replace or remove is
someone else's or was changed since it was written, and names the file.

Writes find the ledger themselves: `claim` registers the folder in this process (and the DataLoader
workers it forks), and every `grafiqs.io.atomic` write under a registered folder checks the file it
replaces and records the new content. The program's own state in `.grafiqs/` (ledger, lock, run
settings, per-batch logs) is never reached through a symbolic link. The same folder takes a lock for
the whole run, so two runs never write into it at once.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Iterable

from grafiqs.errors import InputError
from grafiqs.io import atomic
from grafiqs.io.reading import file_kind

LOG_FOLDER = ".grafiqs"  # the project's own sub-folder: ledger, lock, run settings and per-batch logs
LEDGER = "written.jsonl"
NAMES_ONLY_LEDGER = "written.json"  # the ledger of grafiqs before 2026-12-03: names without content
_LOCKS: dict[tuple[int, int], object] = {}  # (device, inode) of a locked state folder -> its open lock file


class OutputFolder:
    def __init__(self, path: str | Path, what: str = "--output-dir", advice: str | None = None):
        self.path = Path(path)
        self.what = what  # how the user named this folder, for messages
        self.advice = advice or f"move them or choose another {what}"
        self.log_dir = self.path / LOG_FOLDER
        self.ledger = self.log_dir / LEDGER
        self._parsed: tuple = ({}, 0, 0, None)  # entries, bytes and lines parsed so far, the ledger's (device, inode)

    # ------------------------------------------------------------------ what the ledger says

    def recorded(self) -> dict[str, set[tuple[str, int]]]:
        """name -> the (sha256, size) contents written under it; raises InputError if the ledger is damaged.

        The ledger only grows, so each call parses just the whole lines appended since the last (every
        ledgered write asks, and a folder of 100,000 crops must not be read 100,000 times)."""
        self._check_state_folder()
        try:
            handle = open_state(self.ledger, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            self._parsed = ({}, 0, 0, None)
            return {}
        with os.fdopen(handle, "rb") as file:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{self.ledger} is not a regular file; remove it (the program's state folder holds "
                                 "only its own files)")
            entries, offset, lines_read, inode = self._parsed
            if inode != (info.st_dev, info.st_ino) or info.st_size < offset:  # replaced or shortened: from the start
                entries, offset, lines_read = {}, 0, 0
            file.seek(offset)
            data = file.read()
        whole = data[:data.rfind(b"\n") + 1]  # a last line without its newline is a killed run's, half appended
        for number, line in enumerate(whole.decode("utf-8", "replace").split("\n")[:-1], start=lines_read + 1):
            if not line:
                continue
            try:
                entry = json.loads(line)
                name, sha256, size = entry["name"], entry.get("sha256"), entry.get("size")
                valid = _inside(name) and (entry.get("removed") is True or (isinstance(sha256, str) and isinstance(size, int)))
            except (ValueError, TypeError, KeyError):
                valid = False
            if not valid:
                self._parsed = ({}, 0, 0, None)
                raise self._damaged(f"line {number} is not a ledger entry")
            if entry.get("removed") is True:
                entries.pop(name, None)
            else:
                entries.setdefault(name, set()).add((sha256, size))
        self._parsed = (entries, offset + len(whole), lines_read + whole.count(b"\n"), (info.st_dev, info.st_ino))
        return {name: set(contents) for name, contents in entries.items()}

    def owns(self, name: str, recorded: dict | None = None) -> bool:
        """Whether the file `name` is still exactly a content this program wrote there."""
        recorded = self.recorded() if recorded is None else recorded
        contents = recorded.get(name)
        if not contents:
            return False
        try:
            info = os.lstat(self.path / name)
        except OSError:
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_size not in {size for _, size in contents}:
            return False
        return _digest(self.path / name) in {sha256 for sha256, _ in contents}

    def written(self) -> set[str]:
        """Names of the files in the folder that are still what this program wrote there."""
        recorded = self.recorded()
        return {name for name in recorded if self.owns(name, recorded)}

    # ------------------------------------------------------------------ before a run

    def check(self, names: Iterable[str], stale: Iterable[str] | None = None) -> None:
        """Refuse (InputError) if the folder is a file, its ledger is damaged, or a file the run would replace or
        remove (`names`, and of the recorded ones those in `stale`, default all) is not exactly what this program
        wrote; creates nothing."""
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise InputError(f"{self.what} {self.path} is a file, not a folder; give a folder (created if missing)")
        recorded = self.recorded()
        removed = set(recorded) if stale is None else set(recorded) & set(stale)
        foreign, changed = [], []
        for name in sorted(set(names) | removed):
            if not os.path.lexists(self.path / name) or self.owns(name, recorded):
                continue
            (changed if name in recorded else foreign).append(name)
        if foreign and self._ledger_emptied():
            raise self._damaged(f"it is empty, so it cannot tell whether {_some(foreign)} beside it are files this "
                                "program wrote")
        if foreign:
            raise InputError(f"{self.path} already holds {_some(foreign)}, not written by this program: it never "
                             f"overwrites other files; {self.advice}")
        if changed:
            raise InputError(f"{self.path} holds {_some(changed)}, changed since this program wrote it: it never "
                             f"replaces or deletes a file that is no longer its own; {self.advice}")

    def claim(self, names: Iterable[str], stale: Iterable[str] | None = None) -> None:
        """check(), then create the folder, lock it for this process and record every write into it."""
        self.check(names, stale)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.log_dir.mkdir(exist_ok=True)
        except FileExistsError:
            pass
        self._check_state_folder()
        self.lock()
        self.attach()

    def attach(self) -> None:
        """Record writes into this folder from this process (a DDP worker writing into a folder rank 0 claimed)."""
        atomic.register_folder(self.path, self)

    def adopt(self, names: Iterable[str]) -> None:
        """Record files as if each had been written through this folder: files this program has just written into a
        folder it created itself and no one else knows (a fresh temporary folder, e.g. a synthetic set being drawn),
        or a checkpoint the user resumes from, checked to be the program's (train_fr.py --ckpt_path)."""
        self.log_dir.mkdir(exist_ok=True)
        self._check_state_folder()
        for name in sorted(set(names) - {LOG_FOLDER}):
            path = self.path / name
            self._append({"name": name, "sha256": _digest(path), "size": os.lstat(path).st_size})

    def lock(self) -> None:
        """Hold an exclusive lock on the folder until the process ends; a second run is refused."""
        info = os.lstat(self.log_dir)
        if (info.st_dev, info.st_ino) in _LOCKS:
            return  # this process holds it already (e.g. --save-aligned is --output-dir)
        handle = open_state(self.log_dir / "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(handle)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise InputError(f"another run is writing to {self.path} right now; wait for it to finish or choose "
                             f"another {self.what}") from None
        _LOCKS[(info.st_dev, info.st_ino)] = handle

    def remove(self, names: Iterable[str]) -> None:
        """Delete those of `names` that are still what this program wrote here; refuse if one was changed."""
        recorded = self.recorded()
        for name in sorted(set(names) & set(recorded)):
            if self.owns(name, recorded):
                (self.path / name).unlink()
            elif os.path.lexists(self.path / name):
                raise InputError(f"{self.path / name} changed since this program wrote it; it is not deleted")
            self._append({"name": name, "removed": True})

    # ------------------------------------------------------------------ called by grafiqs.io.atomic

    def before_replace(self, name: str, sha256: str, size: int) -> None:
        """A file `name` with this content is about to be renamed into place: refuse to replace someone else's
        file, then record the content. The program's state in .grafiqs/ is not ledgered."""
        if Path(name).parts[0] == LOG_FOLDER:
            return
        if os.path.lexists(self.path / name) and not self.owns(name):
            raise InputError(f"{self.path / name} is not a file this program wrote (or changed since): it is never "
                             f"replaced; {self.advice}")
        self._append({"name": name, "sha256": sha256, "size": size})

    # ------------------------------------------------------------------ internals

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        handle = open_state(self.ledger, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # appends of several processes (DataLoader workers, ranks) one at a time
            size = os.fstat(handle).st_size
            tail = os.pread(handle, min(size, 2**16), max(size - 2**16, 0))  # longer than any entry
            if tail and not tail.endswith(b"\n"):  # half a line of a write cut short (full disk): drop it first
                os.ftruncate(handle, size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else size - len(tail))
            os.write(handle, line)
            os.fsync(handle)
        finally:
            os.close(handle)

    def _check_state_folder(self) -> None:
        try:
            info = os.lstat(self.log_dir)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):
            raise InputError(f"{self.log_dir} is {'a symbolic link' if stat.S_ISLNK(info.st_mode) else file_kind(info.st_mode)}, "
                             "not the program's own state folder; it never follows links there: remove it or choose "
                             f"another {self.what}")
        if os.path.lexists(self.log_dir / NAMES_ONLY_LEDGER):
            raise self._damaged(f"it is {NAMES_ONLY_LEDGER} of an older grafiqs, which recorded names only, so no file "
                                "it lists can be proven the program's own")

    def _ledger_emptied(self) -> bool:
        """Whether the ledger is an empty file: `_append` writes an entry as it creates it, so an empty one lost its
        entries (truncated by a crash of the file system, by someone's `> written.jsonl`, ...)."""
        try:
            info = os.lstat(self.ledger)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == 0

    def _damaged(self, why: str) -> InputError:
        return InputError(
            f"the ledger of {self.path} ({self.ledger.parent.name}/{self.ledger.name}) is damaged: {why}. Nothing it "
            f"lists is replaced or deleted, --overwrite included. To recover: move the results you want to keep out of "
            f"{self.path}, delete its {LOG_FOLDER} folder, and rerun (or choose another {self.what})")


def open_state(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open of a file in the program's state folder, never through a symbolic link."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link; the program never follows links in its own state folder: "
                             "remove it") from None
        raise


def read_state(path: Path) -> str:
    """The text of a state file (FileNotFoundError if absent); a link, FIFO or device is an InputError."""
    handle = open_state(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(handle, "rb") as file:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise InputError(f"{path} is not a regular file; remove it (the program's state folder holds only its own files)")
        return file.read().decode("utf-8", "replace")


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _inside(name) -> bool:
    """A relative path that stays inside the folder: a damaged or hostile ledger can name nothing outside it."""
    return isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def is_primary_process() -> bool:
    """False in the worker processes that DDP launchers (Lightning's, torchrun, SLURM) start with a rank."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
