"""Energy per image from a powercap (RAPL) tree: a fake tree whose counters advance as the loop runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from defectopt.bench.energy import EnergyMeter, PowercapCounter

MAX_RANGE = 262_143_328_850  # a real package zone's max_energy_range_uj


def fake_tree(root: Path, start_uj: int = 1000) -> Path:
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:1", "package-1")):
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{start_uj}\n")
        (d / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    return root


def advance(root: Path, zone: str, uj: int) -> None:
    f = root / zone / "energy_uj"
    value = int(f.read_text()) + uj
    f.write_text(f"{value % MAX_RANGE}\n")


def test_package_zones_only_and_wrap_around(tmp_path):
    root = fake_tree(tmp_path / "powercap")
    counter = PowercapCounter(root)
    assert counter.available and counter.domain == "powercap package-0+package-1"  # not the "core" sub-zone
    assert counter.joules_between([MAX_RANGE - 1_000_000, 5], [2_000_000, 5]) == pytest.approx(3.0)


def test_energy_per_image_over_the_loop_with_idle_power_subtracted(tmp_path):
    root = fake_tree(tmp_path / "powercap")
    counter = PowercapCounter(root)
    t_origin = time.perf_counter()
    calls = {"n": 0}
    idle_uj_per_s = 2_000_000  # 2 W drawn whatever happens (the idle baseline)

    def read():
        idle = int((time.perf_counter() - t_origin) * idle_uj_per_s)
        return [float(idle + calls["n"] * 5_000), 0.0]  # package-0 moves, package-1 idles at 0 W

    counter.read = read
    meter = EnergyMeter(counter, idle_seconds=0.05).start()
    for _ in range(20):  # the "timed loop": 5 mJ of work per image on top of idle
        calls["n"] += 1
        time.sleep(0.002)
    reading = meter.stop(images=20)
    assert reading.idle_watts == pytest.approx(2.0, rel=0.05)
    assert reading.mj_per_image == pytest.approx(5.0, rel=0.1)
    assert reading.to_dict()["domain"] == "powercap package-0+package-1"


def test_counter_files_advancing_between_reads(tmp_path):
    root = fake_tree(tmp_path / "powercap", start_uj=MAX_RANGE - 10)
    counter = PowercapCounter(root)
    meter = EnergyMeter(counter, idle_seconds=0.0).start()
    advance(root, "intel-rapl:0", 30)  # wraps past the range
    advance(root, "intel-rapl:1", 70)
    reading = meter.stop(images=1)
    assert reading.joules == pytest.approx(100e-6)


def test_no_counter_means_no_reading_and_a_reason(tmp_path):
    assert not PowercapCounter(tmp_path / "absent").available
    assert "powercap" in PowercapCounter(tmp_path / "absent").reason
    empty = tmp_path / "empty"
    (empty / "intel-rapl:0").mkdir(parents=True)
    (empty / "intel-rapl:0" / "name").write_text("psys\n")
    c = PowercapCounter(empty)
    assert not c.available and "no readable package energy counter" in c.reason


def _energy_rows(store, model_id):
    from defectopt.store.schema import Measurement

    with store.session() as s:
        return [(m.metric, m.batch_size, m.value, m.extra) for m in s.query(Measurement).filter_by(model_id=model_id)
                if m.metric.startswith("energy")]


def test_bench_writes_energy_rows_from_the_counter_and_none_without(store, db_path, ready_model, tmp_path, monkeypatch):
    from defectopt.bench import energy
    from fixtures.clihelp import run_cli

    args = ["bench", "--ids", str(ready_model), "--quick", "--no-memory", "--no-roofline", "--batch-sizes", "1",
            "--threads", "1", "--db", db_path, "-q"]
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "absent")
    res = run_cli(args)
    assert res.code == 0 and _energy_rows(store, ready_model) == []
    assert " ".join((res.stdout + res.stderr).split()).count("energy per image not measured") == 1

    root = fake_tree(tmp_path / "powercap")
    monkeypatch.setattr(energy, "POWERCAP", root)
    t0 = time.perf_counter()
    monkeypatch.setattr(energy.PowercapCounter, "read", lambda self: [(time.perf_counter() - t0) * 3e6, 0.0])
    res = run_cli(args + ["--force", "--watts", "10"])
    assert res.code == 0, res.stdout + res.stderr
    rows = {m: (b, v, x) for m, b, v, x in _energy_rows(store, ready_model)}
    batch, value, extra = rows["energy_mj_per_image"]
    assert batch == 1 and value >= 0 and extra["domain"] == "powercap package-0+package-1"
    assert extra["idle_watts"] == pytest.approx(3.0, rel=0.1)  # a constant 3 W counter is all idle power
    assert rows["energy_est_mj_per_image"][2]["estimate"] is True
