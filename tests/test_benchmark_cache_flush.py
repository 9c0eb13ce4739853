"""The benchmarks' --cold mode (benchmarks/common.py): the flush writes twice the last-level cache, and every timed
call of a cold session, smoke calls included, comes after one."""
import torch

from benchmarks import common


def test_flush_writes_twice_the_last_level_cache():
    flush = common.CacheFlush("cpu")
    assert flush.bytes == 2 * common.last_level_cache_bytes("cpu")
    assert flush.buffer.numel() * flush.buffer.element_size() >= flush.bytes - 3
    flush.buffer.zero_()
    flush()
    assert bool((flush.buffer == 1).all())


class _DisabledBenchmark:
    disabled = True

    def __call__(self, fn):
        return fn()


def test_cold_session_flushes_before_each_timed_call():
    session = common.Session(smoke=True, malloc_tuned=False, cold=True)
    events = []
    session.flush = lambda: events.append("flush")
    for _ in range(2):
        common._timed(_DisabledBenchmark(), lambda: events.append("call"), session)
    assert events == ["flush", "call", "flush", "call"]
    assert session.info()["cold"] is True


def test_warm_session_does_not_flush():
    session = common.Session(smoke=True, malloc_tuned=False)
    assert session.flush is None and session.info()["cold"] is False
    calls = []
    common._timed(_DisabledBenchmark(), lambda: calls.append(torch.ones(1)), session)
    assert len(calls) == 1
