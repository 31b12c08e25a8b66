"""Measured speed per driver, algorithm and size, for the dispatcher's ``calibrated`` policy.

`ocfpy bench crypto --save` writes it; ``Dispatcher(calibration=Calibration.load())`` uses it
to order drivers *of the same kind* by measured throughput at the size a session expects
(strongSwan's crypto_test bench and DPDK's packet-size scheduler are the precedents). Kind still
comes first: a calibration never puts software ahead of hardware. Off unless asked for.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SIZE = 1400  # what an ESP session mostly sees


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ocfpy" / "calibration.json"


@dataclass
class Calibration:
    # algorithm -> driver -> sorted [(size, ops_per_s)]
    rates: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    source: str = ""

    def add(self, algorithm: str, driver: str, size: int, ops_per_s: float) -> None:
        points = self.rates.setdefault(algorithm, {}).setdefault(driver, [])
        points[:] = sorted([p for p in points if p[0] != size] + [(size, ops_per_s)])

    def rate(self, algorithm: str, driver: str, size: int | None) -> float | None:
        """Measured ops/s at the nearest measured size at or above ``size`` (else the largest)."""
        points = self.rates.get(algorithm, {}).get(driver)
        if not points:
            return None
        size = DEFAULT_SIZE if size is None else size
        i = bisect.bisect_left([s for s, _ in points], size)
        return points[min(i, len(points) - 1)][1]

    def save(self, path: Path | None = None) -> Path:
        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"source": self.source, "rates": self.rates}
        path.write_text(json.dumps(data, indent=1, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        path = path or default_path()
        data = json.loads(Path(path).read_text())
        cal = cls(source=data.get("source", str(path)))
        for alg, drivers in data.get("rates", {}).items():
            for drv, points in drivers.items():
                for size, rate in points:
                    cal.add(alg, drv, int(size), float(rate))
        return cal
