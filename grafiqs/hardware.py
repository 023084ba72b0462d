"""What this machine does fast: its bfloat16 units, and the scorer's speeds measured on it.

score.py's `--compile auto` decides from the speeds measured here (`CompileChoice`), and its
summary names the bf16 units and any bf16 speed measured here. Nothing here changes a score:
bf16 stays an explicit opt-in.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix units: Intel AMX and AVX-512 BF16 (Intel, AMD Zen 4+).
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
SPEEDS_FILE = "scorer_speeds.json"
SPEEDS_FORMAT = "grafiqs scorer speeds, 1"
# Without a compiled speed measured for the setting, `--compile auto` compiles once to measure it when
# the rest of the run would take this long eagerly: the trial risks one compilation (85-169 s cold
# for iresnet50 on 2 CPU cores, 49 s with inductor's cache), which is small against such a run.
TRIAL_SECONDS = 600.0


def _cpu_info(field: str) -> list[str]:
    try:
        return [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith(field)]
    except OSError:  # not Linux
        return []


def bf16_units(torch) -> list[str]:
    """Names of this machine's native bfloat16 units: CUDA GPUs that support bf16, and CPU flags."""
    units = []
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        units.append(f"CUDA bf16 ({torch.cuda.get_device_name()})")
    flags = next(iter(_cpu_info("flags")), "").split()
    return units + [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]


def cache_folder() -> Path:
    """Where measurements and compiled kernels are kept between runs: $GRAFIQS_CACHE_DIR, else
    $XDG_CACHE_HOME/grafiqs, else ~/.cache/grafiqs."""
    if os.environ.get("GRAFIQS_CACHE_DIR"):
        return Path(os.environ["GRAFIQS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grafiqs"


def speed_key(torch, device: str, architecture: list[int], precision: str, batch_size: int, first_group: str,
              channels_last: bool = False) -> str:
    """The setting a speed belongs to: this machine (CPU model and threads, or GPU), torch, the network's
    shape, precision, batch size, the earliest differentiated group (where the backward ends) and the layout."""
    if device == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{next(iter(_cpu_info('model name')), 'CPU')}, {torch.get_num_threads()} threads"
    return (f"{machine} | torch {torch.__version__} | iresnet {'-'.join(map(str, architecture))} | "
            f"precision {precision} | batch {batch_size} | from {first_group}" + (" | channels_last" if channels_last else ""))


@dataclass
class Speeds:
    """Seconds per image of eager and of compiled stages, and the seconds a compilation took."""

    eager: float | None = None
    compiled: float | None = None
    compile: float | None = None

    def complete(self) -> bool:
        return None not in (self.eager, self.compiled, self.compile)

    def break_even(self) -> float:
        """Images from which compiling repays itself (infinite when compiled stages are not faster)."""
        saved = self.eager - self.compiled
        return self.compile / saved if saved > 0 else float("inf")


class SpeedStore:
    """The scorer speeds measured on this machine, one JSON file in `cache_folder()`, by `speed_key`.

    A file of that name that is not such a record is someone else's: it is read as empty and never
    replaced. Writes replace the file atomically; concurrent runs may drop each other's update.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_folder() / SPEEDS_FILE
        self.foreign = False

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("format") != SPEEDS_FORMAT or not isinstance(data.get("speeds"), dict):
            if not self.foreign:
                warnings.warn(f"{self.path} is not a grafiqs speed record; it is left as it is and not used")
            self.foreign = True
            return {}
        return data["speeds"]

    def get(self, key: str) -> Speeds:
        entry = self._read().get(key)
        try:
            return Speeds(**{name: float(value) for name, value in entry.items() if value is not None})
        except (AttributeError, TypeError, ValueError):
            return Speeds()

    def put(self, key: str, speeds: Speeds) -> None:
        from grafiqs.io.atomic import atomic_write_with

        entries = self._read()
        if self.foreign:
            return
        entries[key] = asdict(speeds)
        text = json.dumps({"format": SPEEDS_FORMAT, "speeds": entries}, indent=1, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_with(self.path, lambda file: file.write(text))
        except OSError as error:  # a read-only home must not stop scoring
            warnings.warn(f"could not record scorer speeds in {self.path}: {error}")


class CompileChoice:
    """Eager or compiled stages, batch by batch: `on` and `off` are fixed, `auto` follows measured speeds.

    auto: with this setting's eager and compiled speeds and compilation time on record for this
    machine (`SpeedStore`), compile when the images to score reach the break-even. Without them,
    score eagerly and time the batches (the first one warms up, untimed); when the rest of the run
    would take `TRIAL_SECONDS` or more, compile once to measure and keep whichever is faster. Every
    run, whatever its mode, records what it measured, so auto decides from this machine's numbers.
    """

    def __init__(self, mode: str, images: int, key: str, store: SpeedStore | None, say=print):
        if mode not in ("on", "off", "auto"):
            raise ValueError(f"compile mode must be on, off or auto, not {mode!r}")
        self.mode, self.remaining, self.key, self.store, self.say = mode, images, key, store, say
        self.known = store.get(key) if store else Speeds()
        self.measured = {"eager": [0.0, 0], "compiled": [0.0, 0]}  # seconds, images of timed batches
        self.first_compiled: tuple[float, int] | None = None  # the batch that paid the compilation
        self.warmed_up = False
        self.trial = False
        self.decided: bool | None = {"on": True, "off": False}.get(mode)
        self.reason = f"--compile {mode}"
        self._decide()

    def compiled_next(self) -> bool:
        return bool(self.decided) if self.decided is not None else self.trial

    def observe(self, compiled: bool, images: int, seconds: float) -> None:
        """One batch of `images` took `seconds` with compiled (or eager) stages."""
        self.remaining -= images
        if compiled and self.first_compiled is None:
            self.first_compiled = (seconds, images)
        elif not compiled and not self.warmed_up:
            self.warmed_up = True  # allocator pages and lazy initialisation: not the steady speed
        else:
            total = self.measured["compiled" if compiled else "eager"]
            total[0] += seconds
            total[1] += images
            self._update_known()
        if self.decided is None:
            self._decide()

    def _update_known(self) -> None:
        first_of_its_kind = False
        for name, (seconds, images) in self.measured.items():
            if images:
                first_of_its_kind |= getattr(self.known, name) is None
                setattr(self.known, name, seconds / images)
        if self.first_compiled and self.measured["compiled"][1]:
            seconds, images = self.first_compiled
            first_of_its_kind |= self.known.compile is None
            self.known.compile = max(0.0, seconds - images * self.known.compiled)
        if self.store and first_of_its_kind:
            self.store.put(self.key, self.known)  # keep a new kind of number even if the run is stopped later

    def finish(self) -> None:
        """Record this run's averages (call once the batches are done)."""
        if self.store and any(images for _, images in self.measured.values()):
            self.store.put(self.key, self.known)

    def _decide(self) -> None:
        known = self.known
        if self.mode != "auto":
            return
        if self.trial:
            if self.measured["compiled"][1] and known.eager is not None:
                self.decided = known.compiled < known.eager
                verdict = "keeping them" if self.decided else "eager is as fast here: back to eager stages"
                self.reason = (f"--compile auto measured {1 / known.eager:.1f} img/s eager and "
                               f"{1 / known.compiled:.1f} compiled after {known.compile:.0f} s of compilation: {verdict}")
                self.say(self.reason)
        elif known.complete():
            self.decided = self.remaining >= known.break_even()
            self.reason = (f"--compile auto: {'compiling' if self.decided else 'eager'} for {self.remaining} images "
                           f"(measured on this machine: {1 / known.eager:.1f} img/s eager, {1 / known.compiled:.1f} "
                           f"compiled, {known.compile:.0f} s to compile; compiling pays from {known.break_even():.0f} images)")
            if self.decided:
                self.say(self.reason)
        elif known.eager is not None and self.remaining * known.eager >= TRIAL_SECONDS:
            self.trial = True
            self.say(f"--compile auto: {1 / known.eager:.1f} img/s eager, ~{self.remaining * known.eager / 60:.0f} min "
                     f"for the other {self.remaining} images: compiling the network's stages once to measure them ...")
        elif self.measured["eager"][1]:
            self.decided = False
            self.reason = (f"--compile auto: eager ({self.remaining * known.eager:.0f} s of eager work left at "
                           f"{1 / known.eager:.1f} img/s; a first compilation is tried from {TRIAL_SECONDS:.0f} s)")

    def report(self) -> dict:
        reason = self.reason if self.decided is not None or self.trial else "--compile auto: eager (too few batches to time)"
        return {"mode": self.mode, "compiled": self.compiled_next(), "reason": reason, "key": self.key,
                "measured": asdict(self.known)}
