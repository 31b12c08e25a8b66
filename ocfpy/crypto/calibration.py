"""Measured speed per driver, algorithm and size, for the dispatcher's ``calibrated`` policy.

`ocfpy bench crypto --save` writes it; ``Dispatcher(calibration=Calibration.load())`` uses it
to order drivers *of the same kind* by measured throughput at the size a session expects
(strongSwan's crypto_test bench and DPDK's packet-size scheduler are the precedents). Kind still
comes first: a calibration never puts software ahead of hardware. Off unless asked for.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OcfError

DEFAULT_SIZE = 1400  # what an ESP session mostly sees


class CalibrationError(OcfError, ValueError):
    """A calibration file that cannot be used: ``path``, and ``reason`` saying what is wrong.
    The file is the admin's, but it may be corrupt or written by another program: every reader
    (the config file's check, Dispatcher's default, the CLI) refuses it the same way."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


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
        """Read and check a file `ocfpy bench crypto --save` wrote; CalibrationError (path and
        reason) for anything else. FileNotFoundError is a CalibrationError too."""
        path = Path(path or default_path())
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CalibrationError(str(path), "no such file (write one with `ocfpy bench "
                                   "crypto --save`)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(str(path), f"cannot read the file: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, path: str) -> Calibration:
        """The calibration in ``text`` (read from ``path``), every field checked: one
        parser for every reader, so none takes what another refuses."""
        from .catalogue import UnknownAlgorithm
        from .catalogue import get as get_transform

        def bad(reason: str) -> CalibrationError:
            return CalibrationError(path, f"not a usable calibration: {reason}")

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise bad(f"not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or not isinstance(data.get("rates"), dict):
            raise bad('expected an object with "rates" (as `ocfpy bench crypto --save` writes)')
        source = data.get("source", path)
        if not isinstance(source, str):
            raise bad(f'"source": expected a string, got {type(source).__name__}')
        cal = cls(source=source)
        for algorithm, drivers in data["rates"].items():
            try:
                get_transform(algorithm)
            except UnknownAlgorithm:
                raise bad(f"rates: unknown algorithm {algorithm!r}") from None
            if not isinstance(drivers, dict):
                raise bad(f"rates.{algorithm}: expected an object of driver -> measurements")
            for driver, points in drivers.items():
                where = f"rates.{algorithm}.{driver}"
                if not isinstance(points, list) or not points:
                    raise bad(f"{where}: expected a non-empty list of [bytes, ops per second]")
                for point in points:
                    # a measurement is a size and a rate: NaN, infinite or negative numbers
                    # came from no measurement and would rank drivers arbitrarily
                    ok = (isinstance(point, list) and len(point) == 2
                          and isinstance(point[0], int) and not isinstance(point[0], bool)
                          and point[0] >= 0 and isinstance(point[1], int | float)
                          and not isinstance(point[1], bool) and math.isfinite(point[1])
                          and point[1] > 0)
                    if not ok:
                        raise bad(f"{where}: {point!r} is not [bytes >= 0, ops per second > 0]")
                    cal.add(algorithm, driver, point[0], float(point[1]))
        return cal
