"""The timing harness: blocks, spread, warm-up record, interleaved comparison."""

from __future__ import annotations

import time

import pytest

from defectopt.bench.timing import QUICK, TimingConfig, compare_interleaved, time_fn


def _busy(ms: float):
    def fn():
        end = time.perf_counter() + ms / 1e3
        while time.perf_counter() < end:
            pass
    return fn


def test_time_fn_blocks_percentiles_and_budget():
    cfg = TimingConfig(min_iters=12, min_seconds=0.03, blocks=4, warmup_min_iters=2, warmup_window=2,
                       warmup_max_seconds=0.2, max_seconds=2.0)
    res = time_fn(lambda: time.sleep(0.002), batch_size=1, cfg=cfg)
    assert len(res.block_medians_ms) == 4 and len(res.samples_ms) >= 12
    assert 1.5 <= res.median_ms <= 30  # sleep(2 ms) on a loaded machine
    assert res.percentile(10) <= res.percentile(50) <= res.percentile(90) <= res.percentile(95)
    s = res.summary()
    for key in ("p10_ms", "p90_ms", "iqr_ms", "block_medians_ms", "warmup_iters", "warmup_stable", "clock", "loadavg_1m"):
        assert key in s
    assert res.warmup.iters >= 2


def test_larger_batches_time_the_same_number_of_images():
    cfg = TimingConfig(min_iters=32, blocks=4)
    assert cfg.iters_for(1) == 32 and cfg.iters_for(16) == 4 and cfg.iters_for(64) == 4


def test_throughput_and_per_image_latency_follow_the_batch():
    res = time_fn(lambda: time.sleep(0.004), batch_size=8, cfg=QUICK)
    assert res.per_image_ms == pytest.approx(res.median_ms / 8)
    assert res.throughput_ips == pytest.approx(8e3 / res.median_ms)


def test_compare_interleaved_rotates_order_and_gives_ratio():
    cfg = TimingConfig(min_iters=8, min_seconds=0.02, blocks=4, warmup_min_iters=1, warmup_window=1,
                       warmup_max_seconds=0.05, max_seconds=2.0)
    res = compare_interleaved({"slow": _busy(6), "fast": _busy(2)}, cfg=cfg)
    assert res.order[0] == ["slow", "fast"] and res.order[1] == ["fast", "slow"]
    speedup = res.speedup("slow", "fast")
    assert 1.5 < speedup < 6  # nominally 3; busy-waits stretch under contention
    assert res.speedup("fast", "slow") == pytest.approx(1 / speedup, rel=0.5)
    assert set(res.to_dict()["speedups"]) == {"slow->fast", "fast->slow"}


def test_contention_subtracts_this_process_and_counts_steal(monkeypatch):
    """Arithmetic of the meter on fixed counters: own CPU time is not contention, steal is."""
    from collections import namedtuple

    from defectopt.bench import timing

    Sys = namedtuple("Sys", "user nice system idle iowait irq softirq steal")
    Own = namedtuple("Own", "user system")
    sys_seq = iter([Sys(10, 0, 5, 100, 0, 0, 0, 1), Sys(13.5, 0, 6, 100, 0, 0, 0, 1.2)])  # +4.5 busy, +0.2 steal
    own_seq = iter([Own(2.0, 0.5), Own(3.5, 0.5)])  # this process: +1.5
    clock = iter([100.0, 102.0])  # 2 s wall
    monkeypatch.setattr(timing.psutil, "cpu_times", lambda: next(sys_seq))
    monkeypatch.setattr(timing.psutil, "Process", lambda: type("P", (), {"cpu_times": lambda self: next(own_seq)})())
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    with timing.ContentionMeter() as meter:
        pass
    c = meter.result
    assert c.other_cpu_s == pytest.approx(3.0) and c.other_cores == pytest.approx(1.5)
    assert c.steal_cores == pytest.approx(0.1)
    assert c.contended and c.to_dict()["contended"] is True


def test_a_busy_neighbour_is_recorded_with_the_timing():
    """A real spinning child process during time_fn shows up as contention (about one core)."""
    import subprocess
    import sys

    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        res = time_fn(lambda: time.sleep(0.002), cfg=TimingConfig(min_iters=20, min_seconds=1.0, blocks=2,
                                                                   warmup_max_seconds=0.05))
    finally:
        spin.kill()
        spin.wait()
    c = res.contention
    assert c is not None and c.wall_s >= 1.0
    assert c.other_cores > 0.5 and c.contended
    assert res.summary()["contention"]["contended"] is True


def test_with_blocks_keeps_the_time_per_block():
    cfg = TimingConfig(min_seconds=2.0, blocks=5, max_seconds=20.0).with_blocks(20)
    assert (cfg.blocks, cfg.min_seconds, cfg.max_seconds) == (20, 8.0, 80.0)
    assert cfg.min_seconds / cfg.blocks == 2.0 / 5
