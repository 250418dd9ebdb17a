"""Energy per image from the host's own counters, over the same timed loop as latency.

CPU: Linux powercap (RAPL) package domains, `/sys/class/powercap/<zone>/energy_uj` (Intel and
AMD expose them through the same interface; the zone's `name` is `package-N`). GPU: NVML's total
energy counter (nvidia-ml-py, Volta and newer). An idle baseline is read first (the same counter
over a short sleep) and its power x the loop's wall time is subtracted, so the figure is what the
model costs above an idle machine. Where no counter is readable (usual in VMs: the hypervisor
hides RAPL) nothing is measured and bench says why once: no modelled number is ever stored as a
measurement. `--watts W` offers a separately named, labelled estimate instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POWERCAP = Path("/sys/class/powercap")
IDLE_SECONDS = 0.5  # baseline window before the timed loop


@dataclass
class EnergyReading:
    joules: float  # counter delta over the timed loop
    wall_s: float
    idle_watts: float  # baseline power, measured just before
    images: int
    domain: str  # which counter, e.g. "powercap package-0+package-1" or "nvml gpu0"

    @property
    def net_joules(self) -> float:
        return max(0.0, self.joules - self.idle_watts * self.wall_s)

    @property
    def mj_per_image(self) -> float:
        return self.net_joules * 1e3 / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "joules": round(self.joules, 4), "wall_s": round(self.wall_s, 4),
                "idle_watts": round(self.idle_watts, 3), "images": self.images,
                "net_joules": round(self.net_joules, 4), "idle_seconds": IDLE_SECONDS}


class PowercapCounter:
    """Sum of the package zones' energy counters, in joules, wrap-around handled per zone."""

    def __init__(self, root: Path = POWERCAP):
        self.root = Path(root)
        self.zones: list[tuple[str, Path, float]] = []  # (name, energy_uj file, wrap range in uJ)
        self.reason = ""
        if not self.root.is_dir():
            self.reason = f"no {self.root} (no RAPL/powercap interface; usual inside a VM)"
            return
        for zone in sorted(self.root.iterdir()):
            name_file, energy = zone / "name", zone / "energy_uj"
            try:
                name = name_file.read_text().strip()
                if not name.startswith("package") or not energy.is_file():
                    continue
                energy.read_text()  # readable? (root-only on recent kernels)
                wrap = float((zone / "max_energy_range_uj").read_text().strip() or 0)
            except (OSError, ValueError):
                continue
            self.zones.append((name, energy, wrap))
        if not self.zones:
            self.reason = f"no readable package energy counter under {self.root} (permissions, or none exposed)"

    @property
    def available(self) -> bool:
        return bool(self.zones)

    @property
    def domain(self) -> str:
        return "powercap " + "+".join(name for name, _, _ in self.zones)

    def read(self) -> list[float]:
        return [float(path.read_text().strip()) for _, path, _ in self.zones]

    def joules_between(self, before: list[float], after: list[float]) -> float:
        total = 0.0
        for (_, _, wrap), a, b in zip(self.zones, before, after):
            delta = b - a
            if delta < 0 and wrap > 0:  # the counter wrapped past max_energy_range_uj
                delta += wrap
            total += max(0.0, delta)
        return total / 1e6


class NvmlCounter:
    """Total energy of one NVIDIA GPU since driver load (mJ), via nvidia-ml-py."""

    def __init__(self, index: int = 0):
        self.reason = ""
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self._read = lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as exc:  # no module, no driver, or a GPU older than Volta
            self.handle = None
            self.reason = f"no NVML energy counter ({type(exc).__name__}: {str(exc)[:80]}); pip install nvidia-ml-py"
        self.index = index

    @property
    def available(self) -> bool:
        return self.handle is not None

    @property
    def domain(self) -> str:
        return f"nvml gpu{self.index}"

    def read(self) -> list[float]:
        return [self._read()]

    def joules_between(self, before: list[float], after: list[float]) -> float:
        return max(0.0, after[0] - before[0]) / 1e3


def counter_for(device: str, root: Path | None = None):
    return NvmlCounter() if device == "cuda" else PowercapCounter(root or POWERCAP)


class EnergyMeter:
    """`meter.start()` reads the idle baseline then the counter; `meter.stop(images)` the reading."""

    def __init__(self, counter, idle_seconds: float = IDLE_SECONDS):
        self.counter, self.idle_seconds = counter, idle_seconds
        self.result: EnergyReading | None = None

    def start(self) -> EnergyMeter:
        c = self.counter
        t0, e0 = time.perf_counter(), c.read()
        time.sleep(self.idle_seconds)
        t1, e1 = time.perf_counter(), c.read()
        self._idle_w = c.joules_between(e0, e1) / max(t1 - t0, 1e-9)
        self._t0, self._e0 = time.perf_counter(), c.read()
        return self

    def stop(self, images: int) -> EnergyReading:
        e1, t1 = self.counter.read(), time.perf_counter()
        self.result = EnergyReading(self.counter.joules_between(self._e0, e1), t1 - self._t0, self._idle_w, images,
                                    self.counter.domain)
        return self.result
