"""Long work at background priority (lamina.archive.priority): the threads that run it, and only
those, get the configured nice value."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.fixity import verify
from lamina.archive.ingest import Ingestor
from lamina.archive.priority import background_pool, lower_priority
from lamina.config import Settings
from lamina.errors import ConfigurationError
from lamina.sample import write_samples
from tests.support import ingest_path

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a thread's nice value is Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _in_thread(work: object) -> object:
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(work()))  # type: ignore[operator]
    thread.start()
    thread.join()
    return seen[0]


def test_lowering_a_thread_leaves_the_caller_and_reaches_the_threads_it_starts() -> None:
    before = _nice()
    if before > 14:
        pytest.fail(f"the tests run at nice {before}: run them at 14 or less to see a thread lowered")

    def work() -> tuple[bool, int, int]:
        lowered = lower_priority(before + 5)
        child = _in_thread(_nice)
        return lowered, _nice(), child  # type: ignore[return-value]

    lowered, own, child = _in_thread(work)  # type: ignore[misc]
    assert lowered is True
    assert own == before + 5
    assert child == before + 5  # inherited
    assert _nice() == before  # the calling thread is untouched


def test_zero_changes_nothing_and_a_thread_is_never_raised() -> None:
    before = _nice()
    if before > 9:
        pytest.fail(f"the tests run at nice {before}: run them at 9 or less to see a thread lowered")
    assert _in_thread(lambda: (lower_priority(0), _nice())) == (False, before)

    def lowered_twice() -> int:
        lower_priority(before + 10)
        lower_priority(before + 3)  # would raise it: left at +10
        return _nice()

    assert _in_thread(lowered_twice) == before + 10
    assert _in_thread(lambda: (lower_priority(99), _nice())) == (True, 19)


def test_the_pool_of_long_work_runs_at_the_nice_value_asked() -> None:
    with background_pool(2, 19, "test-background") as pool:
        values = {pool.submit(_nice).result() for _ in range(4)}
    assert values == {19}


def test_a_fixity_run_reads_at_background_priority(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    (sample,) = write_samples(tmp_path / "samples", ["aperio_svs"], size=(1024, 768), seed=3)
    assert ingest_path(ingestor, sample.path).ok
    seen: list[int] = []
    store = archive.store
    original = store.open

    def spying_open(*args: object, **kwargs: object) -> object:
        seen.append(_nice())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    store.open = spying_open  # type: ignore[method-assign]
    try:
        verify(archive.catalog, store, workers=2, nice=19)
    finally:
        store.open = original  # type: ignore[method-assign]
    assert seen and set(seen) == {19}


def test_the_setting_is_a_nice_value(tmp_path: Path) -> None:
    assert Settings.load(tmp_path, env={}).background_nice == 19
    assert Settings.load(tmp_path, env={"LAMINA_BACKGROUND_NICE": "0"}).background_nice == 0
    with pytest.raises(ConfigurationError, match="LAMINA_BACKGROUND_NICE=20: a nice value from 0"):
        Settings.load(tmp_path, env={"LAMINA_BACKGROUND_NICE": "20"})
