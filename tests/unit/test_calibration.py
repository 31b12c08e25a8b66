"""The calibrated policy orders drivers of the same kind by measured speed, never across kinds."""

from ocfpy.crypto.calibration import Calibration
from ocfpy.crypto.catalogue import get
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.driver import AeadContext, Driver, DriverKind, Offer
from ocfpy.crypto.registry import Registry


class _Gcm(AeadContext):
    def __init__(self, t):
        self.transform = t

    def seal(self, iv, pt, aad):
        return pt

    def open(self, iv, ct, aad):
        return ct


def _driver(name, kind):
    cls = type(name, (Driver,), {
        "name": name, "kind": kind,
        "offers": lambda self: [Offer("aes128gcm16")],
        "new_context": lambda self, t, key: _Gcm(t),
    })
    return cls()


def test_calibration_round_trip(tmp_path):
    cal = Calibration(source="test")
    cal.add("aes128gcm16", "a", 64, 100.0)
    cal.add("aes128gcm16", "a", 1400, 50.0)
    path = cal.save(tmp_path / "c.json")
    back = Calibration.load(path)
    assert back.rate("aes128gcm16", "a", 64) == 100.0
    assert back.rate("aes128gcm16", "a", 1000) == 50.0  # next measured size up
    assert back.rate("aes128gcm16", "a", 99999) == 50.0  # largest
    assert back.rate("aes128gcm16", "b", 64) is None


def test_calibrated_order_within_a_kind_only():
    reg = Registry.from_drivers([_driver("slow", DriverKind.SOFTWARE), _driver("fast", DriverKind.SOFTWARE),
                                 _driver("hw", DriverKind.HARDWARE)], run_selftests=False)
    cal = Calibration()
    cal.add("aes128gcm16", "slow", 1400, 10.0)
    cal.add("aes128gcm16", "fast", 1400, 1000.0)
    cal.add("aes128gcm16", "hw", 1400, 1.0)
    d = Dispatcher(reg, calibration=cal)
    assert [r.name for r in d.candidates(get("aes128gcm16"), 1400)] == ["hw", "fast", "slow"]
    plain = Dispatcher(reg)
    assert [r.name for r in plain.candidates("aes128gcm16")] == ["hw", "slow", "fast"]


def test_priority_orders_drivers_within_a_kind_and_calibration_overrides_it():
    low, high = _driver("kernelish", DriverKind.SOFTWARE), _driver("inprocess", DriverKind.SOFTWARE)
    low.priority, high.priority = 50, 100
    reg = Registry.from_drivers([low, high], run_selftests=False)
    assert [r.name for r in Dispatcher(reg).candidates("aes128gcm16")] == ["inprocess", "kernelish"]
    cal = Calibration()
    cal.add("aes128gcm16", "kernelish", 1400, 1000.0)
    cal.add("aes128gcm16", "inprocess", 1400, 10.0)
    measured = Dispatcher(reg, calibration=cal)
    assert [r.name for r in measured.candidates("aes128gcm16", 1400)] == ["kernelish", "inprocess"]
