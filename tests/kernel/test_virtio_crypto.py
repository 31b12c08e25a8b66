"""A real (virtual) accelerator: QEMU's virtio-crypto device, inside the VM lane.

tests/vm/run.py boots a stock kernel with a virtio-crypto-pci device ``crypto0`` behind a PCIe
root port (so it can be unplugged), an empty root port ``ocfpyrp1`` (for a hot-plug) and a QMP
monitor reachable from the guest (tests/vm/qmp.py). The tests run in file order: discovery,
admission, correctness against OpenSSL, the benchmark, then hot-unplug during a stream of
operations and hot-plug of a new device.

The unplug stream runs in a child process: virtio_crypto (Linux 6.1) frees its device on
removal even while crypto transforms still point at it, so a request racing the removal can
hang in the kernel or oops; a child process keeps such an outcome from taking pytest down,
and the test then reports it instead of hanging. The child never exits: destroying a transform
of the freed device corrupts the kernel's memory (measured: a general protection fault in the
slab allocator seconds later, in whatever test ran next), so it holds the device's handles
until the guest powers off, as a daemon holds them until it stops (docs/devices.md). The two
tests that change the guest's devices carry the ``unplug`` marker and run after every other
test of the lane (tests/kernel/conftest.py).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vm.guest import in_vm_lane, results_dir

pytestmark = pytest.mark.virtio

REPO = Path(__file__).resolve().parents[2]
DEVICE_ID = os.environ.get("OCFPY_VM_CRYPTO_DEVICE", "crypto0")
# AES-CBC takes whole blocks: 1408 is a 1400-byte ESP payload after padding.
SIZES = (64, 1408, 16384)


def _need_device():
    if not in_vm_lane():
        pytest.skip("needs the VM lane's virtio-crypto device (scripts/vm-lane.sh)")
    from ocfpy.crypto.devices import discovery

    found = [d for d in discovery.discover() if d.family.key == "virtio-crypto"]
    if not found:
        pytest.skip("no virtio-crypto device present (already unplugged?)")
    return found[0]


def _ocfpy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ocfpy"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, COLUMNS="200"))


def _save(name: str, data) -> None:
    out = results_dir()
    if out is not None:
        (out / name).write_text(data if isinstance(data, str) else json.dumps(data, indent=1))


def _openssl_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    """The openssl command line, an implementation independent of everything in-process."""
    done = subprocess.run(
        ["openssl", "enc", f"-aes-{len(key) * 8}-cbc", "-nopad", "-K", key.hex(), "-iv",
         iv.hex()], input=data, capture_output=True, timeout=60, check=True)
    return done.stdout


# -- discovery and admission -------------------------------------------------------------------
def test_devices_finds_the_virtio_crypto_device(tmp_path):
    _need_device()
    recording = tmp_path / "ocfpy-drv-virtio-recorded.json"
    out = _ocfpy("devices", "--json", "--record", str(recording))
    assert out.returncode == 0, out.stderr
    devices = [d for d in json.loads(out.stdout) if d["family"] == "virtio-crypto"]
    assert len(devices) == 1, out.stdout
    dev = devices[0]
    assert dev["kernel_driver"] == "virtio_crypto" and dev["device_id"] == "1af4:1054"
    assert dev["usable"] is True
    assert dev["offers"] == {"aes128": "virtio_crypto_aes_cbc", "aes192": "virtio_crypto_aes_cbc",
                             "aes256": "virtio_crypto_aes_cbc"}
    _save("virtio-crypto-recorded.json", recording.read_text())  # a real capture, for fixtures
    table = _ocfpy("devices")
    assert "virtio-crypto" in table.stdout and "virtio_crypto_aes_cbc" in table.stdout


def test_drivers_lists_an_active_hardware_driver_after_its_kats():
    dev = _need_device()
    out = _ocfpy("drivers", "--json")
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    name = f"virtio_crypto@{dev.address}"
    assert name in records, sorted(records)
    rec = records[name]
    assert rec["kind"] == "hardware" and rec["status"] == "active", rec
    assert set(rec["algorithms"]) == {"aes128", "aes192", "aes256"}
    assert rec["quarantined"] == {}
    assert rec["device"]["pci_id"] == "1af4:1054"
    assert rec["implementations"]["aes256"].startswith("virtio_crypto_aes_cbc (priority")


def test_cbc_sessions_land_on_the_device_and_match_openssl():
    dev = _need_device()
    from ocfpy.crypto.devices import proc_crypto
    from ocfpy.crypto.dispatcher import Dispatcher

    d = Dispatcher()
    for bits in (128, 192, 256):
        key = os.urandom(bits // 8)
        s = d.open(f"aes{bits}", key=key)
        assert s.driver == f"virtio_crypto@{dev.address}", f"aes{bits} went to {s.driver}"
        # the kernel counts the transform our socket holds on the virtio implementation
        refs = {a.driver: int(a.fields.get("refcnt", "0")) for a in proc_crypto.read()}
        assert refs["virtio_crypto_aes_cbc"] >= 2
        for size in (16, 64, 1408, 16384):
            iv, data = os.urandom(16), os.urandom(size)
            ct = s.encrypt(iv, data)
            assert ct == _openssl_cbc(key, iv, data), (bits, size)
            assert s.decrypt(iv, ct) == data
        s.close()


# -- benchmark ---------------------------------------------------------------------------------
def _per_op_us(session, size: int, budget: float = 0.4) -> float:
    iv, data = os.urandom(16), os.urandom(size)
    enc = session.encrypt
    runs = []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            enc(iv, data)
            n += 1
            if n >= 20 and time.perf_counter() - t0 > budget:
                break
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def test_benchmark_virtio_vs_af_alg_vs_openssl():
    dev = _need_device()
    from ocfpy.crypto.dispatcher import Dispatcher

    d = Dispatcher()
    key = os.urandom(32)
    names = {"virtio-crypto": f"virtio_crypto@{dev.address}", "af_alg (kernel default)": "af_alg",
             "openssl": "openssl"}
    sessions = {label: d.open("aes256", key=key, backend=name) for label, name in names.items()}
    iv, data = os.urandom(16), os.urandom(1408)
    outputs = {label: s.encrypt(iv, data) for label, s in sessions.items()}
    assert len(set(outputs.values())) == 1, "drivers disagree"
    rows = {}
    for size in SIZES:
        rows[size] = {label: _per_op_us(s, size) for label, s in sessions.items()}
    impl = sessions["af_alg (kernel default)"]._record.admitted["aes256"].implementation
    report = {"kernel": os.uname().release, "af_alg implementation": impl,
              "per_op_us": rows,
              "ratio_vs_openssl": {size: {k: v / r["openssl"] for k, v in r.items()}
                                   for size, r in rows.items()}}
    _save("virtio-bench.json", report)
    print(json.dumps(report, indent=1))
    for s in sessions.values():
        s.close()


# -- hot-unplug and hot-plug -------------------------------------------------------------------
@pytest.mark.unplug
def test_hot_unplug_during_a_stream_of_cbc_operations(tmp_path):
    dev = _need_device()
    # Transforms on the device that this process still holds (known-answer-test contexts
    # waiting for the garbage collector) must go while the device is here: destroyed after
    # the unplug, virtio_crypto (6.1) waits forever for the vanished device, and this process
    # could never exit (docs/devices.md).
    gc.collect()
    out_dir = results_dir() or tmp_path
    report_path, log_path = out_dir / "unplug-report.json", out_dir / "unplug-stream.log"
    report_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--unplug-stream", dev.address, str(report_path)]
    # Files, not pipes, and no wait() without a deadline: a child stuck in the kernel cannot
    # be killed, and must not hang this test run with it.
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                 env=dict(os.environ, PYTHONPATH=str(REPO)))
        deadline = time.monotonic() + 300
        while (child.poll() is None and not report_path.exists()
               and time.monotonic() < deadline):
            time.sleep(0.5)
        time.sleep(1)  # the child goes on holding its handles; see that it is still there
    _save("unplug-dmesg.txt", _dmesg())
    if not report_path.exists():
        pytest.fail("the stream did not finish within 300 s of the unplug; see "
                    f"{log_path.name} and unplug-dmesg.txt in the results")
    report = json.loads(report_path.read_text())
    # The child holds the vanished device's handles until the guest powers off (see the
    # module docstring): it is never killed, and it must still be there.
    report["child_holds_handles"] = child.poll() is None
    _save("unplug-report.json", report)
    assert report["child_holds_handles"], (f"the stream process exited ({child.returncode}):\n"
                                           + log_path.read_text()[-4000:])
    print(json.dumps(report, indent=1))
    assert report["wrong_outputs"] == 0 and report["exceptions"] == []
    assert report["ops_after_gone"] > 0, "the stream did not continue after the unplug"
    assert report["registry_status"] == "gone"
    assert all(not d.startswith("virtio_crypto@") for d in report["drivers_after"])
    assert report["migrations"] == report["sessions"]


@pytest.mark.unplug
def test_hot_plug_of_a_new_device_adds_a_driver():
    if not in_vm_lane():
        pytest.skip("needs the VM lane (QMP)")
    from ocfpy.crypto.devices import discovery, hotplug
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.crypto.driver import DriverKind
    from ocfpy.crypto.registry import Registry
    from tests.vm.qmp import qmp

    if any(d.family.key == "virtio-crypto" for d in discovery.discover()):
        pytest.skip("a virtio-crypto device is still present (the unplug test did not run)")
    registry = Registry.load()
    d = Dispatcher(registry)
    assert all(r.kind is not DriverKind.HARDWARE for r in registry.active())
    attachment = hotplug.attach(registry)
    try:
        qmp("object-add", **{"qom-type": "cryptodev-backend-builtin", "id": "ocfpycdev1"})
        t0 = time.monotonic()
        qmp("device_add", driver="virtio-crypto-pci", id="ocfpycrypto1", cryptodev="ocfpycdev1",
            bus="ocfpyrp1")
        deadline = time.monotonic() + 90
        while not attachment.added and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        assert attachment.added, "no driver was added within 90 s of device_add"
        (name,) = attachment.added
        assert name.startswith("virtio_crypto@")
        key = os.urandom(16)
        s = d.open("aes128", key=key)
        assert s.driver == name
        iv, data = os.urandom(16), os.urandom(1408)
        assert s.encrypt(iv, data) == _openssl_cbc(key, iv, data)
        s.close()
        _save("hotplug-report.json", {"added": name, "seconds_from_device_add": elapsed})
    finally:
        attachment.detach()


def _dmesg() -> str:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout[-20000:]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"dmesg failed: {exc}"


# -- the child process of the unplug test -------------------------------------------------------
def _unplug_stream(address: str, report_path: str) -> int:
    import logging
    import threading

    from ocfpy.plugins.openssl import OpenSSLDriver

    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.crypto.registry import DriverStatus, Registry
    from tests.vm.qmp import qmp, wait_event

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(relativeCreated)8.0f %(threadName)s %(name)s: %(message)s")
    d = Dispatcher()
    name = f"virtio_crypto@{address}"
    ref = Dispatcher(Registry.from_drivers([OpenSSLDriver()]))  # the reference, apart
    work = []
    for bits in (128, 192, 256):
        for _ in range(2):
            key = os.urandom(bits // 8)
            work.append((d.open(f"aes{bits}", key=key), ref.open(f"aes{bits}", key=key)))
    assert all(s.driver == name for s, _ in work), [s.driver for s, _ in work]
    record = d.registry.get(name)
    removed_at: list[float] = []
    d.registry.subscribe(lambda event, rec: removed_at.append(time.monotonic())
                         if event == "removed" and rec.name == name else None)
    state = {"ops": 0, "wrong": 0, "after_gone": 0, "exceptions": [], "gone_at": None}
    stop = threading.Event()
    started = threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            s, r = work[i % len(work)]
            iv, data = os.urandom(16), os.urandom(16 * (1 + i % 88))
            try:
                ct = s.encrypt(iv, data)
                ok = ct == r.encrypt(iv, data) and s.decrypt(iv, ct) == data
            except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
                state["exceptions"].append(f"{type(exc).__name__}: {exc}")
                return
            state["ops"] += 1
            state["wrong"] += not ok
            if record.status is DriverStatus.GONE:
                state["after_gone"] += 1
            i += 1
            if i == 50:
                started.set()

    t = threading.Thread(target=stream, name="stream", daemon=True)
    t.start()
    if not started.wait(120):
        stop.set()
        raise SystemExit(f"stream did not start: {state}")
    t0 = time.monotonic()
    print(f"device_del {DEVICE_ID} after {state['ops']} ops", file=sys.stderr, flush=True)
    qmp("device_del", id=DEVICE_ID)
    deleted = wait_event("DEVICE_DELETED", timeout=60)
    t_deleted = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while record.status is not DriverStatus.GONE and time.monotonic() < deadline:
        time.sleep(0.05)
    t_gone = (removed_at[0] - t0) if removed_at else None
    target = state["ops"] + 200
    deadline = time.monotonic() + 120
    while state["ops"] < target and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(60)
    report = {
        "sessions": len(work),
        "ops": state["ops"],
        "wrong_outputs": state["wrong"],
        "ops_after_gone": state["after_gone"],
        "exceptions": state["exceptions"],
        "device_deleted_event": bool(deleted),
        "seconds_to_device_deleted": round(t_deleted, 3),
        "seconds_to_driver_gone": round(t_gone, 3) if t_gone is not None else None,
        "registry_status": record.status.value,
        "registry_reason": record.reason,
        "drivers_after": [s.driver for s, _ in work],
        "migrations": sum(s.migrations for s, _ in work),
        "errors": sum(s.errors for s, _ in work),
        "stats": {k: v for k, v in d.stats().items() if v["ops"] or v["migrations"]},
    }
    partial = Path(f"{report_path}.partial")  # the test reads the report once it exists
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(report_path)
    print(json.dumps(report), flush=True)
    print("holding the vanished device's handles until the guest powers off: closing them "
          "would make virtio_crypto (Linux 6.1) touch the device it freed", flush=True)
    sys.stderr.flush()
    while True:  # exiting would close them; so would a kill, which nothing here sends
        time.sleep(3600)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--unplug-stream":
    sys.exit(_unplug_stream(sys.argv[2], sys.argv[3]))
