"""The project's error types: each message says what is wrong and what to do."""
import contextlib


class GrafiqsError(Exception):
    """Base class of every error this project raises on bad input."""


class WeightsError(GrafiqsError):
    """A weights or checkpoint file is missing, unreadable, unsafe or for another architecture."""


class ImageError(GrafiqsError):
    """An image file cannot be read or decoded."""


class InputError(GrafiqsError):
    """A path, option or data file given by the user is unusable."""


class ReadError(InputError):
    """A file the program must read is missing, unreadable, not a regular file or too large."""

    def __init__(self, what: str, path, reason: str):
        super().__init__(f"{what} not found: {path}" if reason == "not found" else f"cannot read {what} {path}: {reason}")
        self.path, self.reason = path, reason


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run; finished batches are in the log."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise RunInterrupted inside the block (cleanup in `except`/`finally` runs), as
    Ctrl-C does; the previous handlers come back afterwards. Only in the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise RunInterrupted(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def report_stop(stop: BaseException, kept: str) -> int:
    """Say which signal stopped a run and where its finished work is kept; the exit status 128 + signal."""
    import signal
    import sys

    signum = stop.signum if isinstance(stop, RunInterrupted) else signal.SIGINT
    print(f"\nstopped by {signal.Signals(signum).name}: {kept}; rerun the same command to resume", file=sys.stderr)
    return 128 + signum
