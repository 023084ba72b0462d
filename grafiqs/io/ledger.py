"""Folders the project writes into, and the rule that keeps everyone else's files safe there.

The program never deletes or overwrites a file it did not create. Every folder it writes
results into keeps a ledger, `.grafiqs/written.json`, of the file names it created there; a
name enters the ledger before the file is first written. A file that exists under one of
the names a run is about to write, but is not in the ledger, belongs to somebody else: the
run refuses before it creates anything. Only names in the ledger are ever replaced or
removed (stale outputs of an earlier run, `--overwrite`). The same folder takes a lock for
the whole run, so two runs never write into it at once.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from grafiqs.errors import InputError

LOG_FOLDER = ".grafiqs"  # the project's own sub-folder: ledger, lock, run settings and per-batch logs
LEDGER = "written.json"


class OutputFolder:
    def __init__(self, path: str | Path, what: str = "--output-dir"):
        self.path = Path(path)
        self.what = what  # how the user named this folder, for messages
        self.log_dir = self.path / LOG_FOLDER
        self._lock = None

    def written(self) -> set[str]:
        """Names of the files this program created here (an unreadable ledger counts as none)."""
        try:
            names = json.loads((self.log_dir / LEDGER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        return {n for n in names if _inside(n)} if isinstance(names, list) else set()

    def check(self, names: Iterable[str]) -> None:
        """Refuse (InputError) if the folder is a file or any of `names` exists without being ours; creates nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.what} {self.path} is a file, not a folder; give a folder (created if missing)")
        ours = self.written()
        foreign = sorted(n for n in names if n not in ours and os.path.lexists(self.path / n))
        if foreign:
            raise InputError(
                f"{self.path} already holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, not written by "
                f"this program: it never overwrites other files; move them or choose another {self.what}")

    def claim(self, names: Iterable[str]) -> None:
        """check(), then create the folder, lock it for this process and enter `names` in the ledger."""
        names = set(names)
        self.check(names)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.lock()
        self._save_ledger(self.written() | names)

    def lock(self) -> None:
        """Hold an exclusive lock on the folder until the process ends; a second run is refused."""
        if self._lock is not None:
            return
        handle = open(self.log_dir / "lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise InputError(f"another run is writing to {self.path} right now; wait for it to finish or choose "
                             f"another {self.what}") from None
        self._lock = handle

    def remove(self, names: Iterable[str]) -> None:
        """Delete those of `names` that this program created here (others are left alone)."""
        ours = self.written()
        for name in set(names) & ours:
            (self.path / name).unlink(missing_ok=True)
        self._save_ledger(ours - set(names))

    def _save_ledger(self, names: set[str]) -> None:
        from grafiqs.io.score_files import atomic_write_text

        atomic_write_text(self.log_dir / LEDGER, json.dumps(sorted(names), indent=0))


def _inside(name) -> bool:
    """A relative path that stays inside the folder: a damaged or hostile ledger can name nothing outside it."""
    return isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def is_primary_process() -> bool:
    """False in the worker processes that DDP launchers (Lightning's, torchrun, SLURM) start with a rank."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content: the same weights under another name are the same run, new ones at the
    same path are not."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()
