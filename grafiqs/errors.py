"""The project's error types: each message says what is wrong and what to do."""


class GrafiqsError(Exception):
    """Base class of every error this project raises on bad input."""


class WeightsError(GrafiqsError):
    """A weights or checkpoint file is missing, unreadable, unsafe or for another architecture."""


class ImageError(GrafiqsError):
    """An image file cannot be read or decoded."""


class InputError(GrafiqsError):
    """A path, option or data file given by the user is unusable."""


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run; finished batches are in the log."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def report_stop(stop: BaseException, kept: str) -> int:
    """Say which signal stopped a run and where its finished work is kept; the exit status 128 + signal."""
    import signal
    import sys

    signum = stop.signum if isinstance(stop, RunInterrupted) else signal.SIGINT
    print(f"\nstopped by {signal.Signals(signum).name}: {kept}; rerun the same command to resume", file=sys.stderr)
    return 128 + signum
