"""--compile auto's decisions from measured speeds (grafiqs.hardware), and the speed record's safety."""
import json

import pytest

from grafiqs.hardware import TRIAL_SECONDS, CompileChoice, SpeedStore, Speeds

KEY = "a machine | torch x | iresnet 1-1-1-1-8-8-8-8 | precision 32 | batch 4 | from image"


def run(choice: CompileChoice, batches: int, eager_seconds: float, compiled_seconds: float, compile_seconds: float):
    """Feed `choice` the batch times such a machine would show (4 images a batch); returns the modes used."""
    modes, compiled_before = [], False
    for _ in range(batches):
        compiled = choice.compiled_next()
        seconds = 4 * (compiled_seconds if compiled else eager_seconds)
        if compiled and not compiled_before:
            seconds += compile_seconds
        compiled_before |= compiled
        choice.observe(compiled, 4, seconds)
        modes.append("c" if compiled else "e")
    return "".join(modes)


def test_auto_without_a_record_times_eager_batches_and_tries_a_compilation_only_for_a_long_run(tmp_path):
    store = SpeedStore(tmp_path / "speeds.json")
    short = CompileChoice("auto", 40, KEY, store, say=str)  # 40 images at 1 s: far below the trial threshold
    assert run(short, 10, 1.0, 0.5, 30.0) == "e" * 10
    assert "eager" in short.report()["reason"]
    assert store.get(KEY) == Speeds(eager=1.0)
    images = int(TRIAL_SECONDS) + 40
    faster = CompileChoice("auto", images, KEY, store, say=str)  # eager known: the trial starts at once
    assert run(faster, 6, 1.0, 0.5, 30.0) == "cccccc"
    assert store.get(KEY) == Speeds(eager=1.0, compiled=0.5, compile=30.0)
    assert "keeping them" in faster.report()["reason"]
    slower = CompileChoice("auto", images, KEY, SpeedStore(tmp_path / "other.json"), say=str)
    assert run(slower, 6, 1.0, 1.5, 30.0) == "eecc" + "ee"  # warm-up, timed, trial (compile), timed: back to eager
    assert "back to eager" in slower.report()["reason"]


def test_auto_with_a_record_compiles_exactly_from_the_measured_break_even(tmp_path):
    store = SpeedStore(tmp_path / "speeds.json")
    store.put(KEY, Speeds(eager=1.0, compiled=0.75, compile=50.0))  # 0.25 s saved per image: pays from 200
    assert store.get(KEY).break_even() == 200
    assert run(CompileChoice("auto", 199, KEY, store, say=str), 3, 1.0, 0.75, 50.0) == "eee"
    assert run(CompileChoice("auto", 200, KEY, store, say=str), 3, 1.0, 0.75, 50.0) == "ccc"
    assert Speeds(eager=1.0, compiled=1.0, compile=0.0).break_even() == float("inf")


def test_on_and_off_are_fixed_and_record_what_they_measure(tmp_path):
    store = SpeedStore(tmp_path / "speeds.json")
    assert run(CompileChoice("off", 10**6, KEY, store, say=str), 3, 2.0, 1.0, 9.0) == "eee"
    assert run(CompileChoice("on", 4, KEY, store, say=str), 3, 2.0, 1.0, 9.0) == "ccc"
    assert store.get(KEY) == Speeds(eager=2.0, compiled=1.0, compile=9.0)
    with pytest.raises(ValueError, match="on, off or auto"):
        CompileChoice("maybe", 1, KEY, store)


def test_a_file_of_the_speed_records_name_that_is_not_one_is_never_replaced(tmp_path):
    path = tmp_path / "speeds.json"
    path.write_text("my notes\n")
    store = SpeedStore(path)
    with pytest.warns(UserWarning, match="not a grafiqs speed record"):
        assert store.get(KEY) == Speeds()
    store.put(KEY, Speeds(eager=1.0))
    assert path.read_text() == "my notes\n"
    path.write_text(json.dumps({"format": "grafiqs scorer speeds, 1", "speeds": {KEY: {"eager": "fast"}}}))
    assert SpeedStore(path).get(KEY) == Speeds()  # a malformed entry reads as unmeasured
