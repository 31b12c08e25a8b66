"""Log targets, per-subsystem levels, one line per event, and no secrets at any level."""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import tomllib

import pytest

from ocfpy.iked import logsetup
from ocfpy.iked.logsetup import (
    AUDIT,
    RAW,
    LogOptions,
    LogSetupError,
    OneLineFormatter,
    configure,
    python_level,
    stderr_is_journal,
    subsystem_of,
)

# the two in-memory IKE engines of the IKE core's unit tests
from tests.unit.ike.conftest import dispatcher, initiator_and_responder  # noqa: F401


@pytest.fixture(autouse=True)
def restore_logging():
    """configure() rewires the root logger and the subsystems' levels: put them back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {p: logging.getLogger(p).level for ps in logsetup.SUBSYSTEMS.values() for p in ps})
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        if h not in saved[0]:
            h.close()
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_subsystem_of_takes_the_longest_prefix():
    assert subsystem_of("ocfpy.ike.tasks.ike_auth") == "ike"
    assert subsystem_of("ocfpy.crypto.dispatcher") == "crypto"
    assert subsystem_of("ocfpy.crypto.devices.hotplug") == "device"
    assert subsystem_of("ocfpy.drivers.kernel_accel.driver") == "device"
    assert subsystem_of("ocfpy.plugins.openssl") == "crypto"
    assert subsystem_of("ocfpy.iked.control") == "ctl"
    assert subsystem_of("ocfpy.iked.net") == "net"
    assert subsystem_of("ocfpy.esp.dataplane.xfrm") == "esp"
    assert subsystem_of("ocfpy.iked.daemon") is None
    assert subsystem_of("ocfpy.iker") is None  # a prefix of a name is not a parent


def test_levels_follow_charon():
    assert [python_level(n) for n in (-1, 0, 1, 2, 3, 4)] == [
        logging.CRITICAL + 10, AUDIT, logging.INFO, logging.DEBUG, RAW, RAW]
    with pytest.raises(ValueError):
        python_level(5)


def test_per_subsystem_levels_are_set_on_the_loggers():
    out = io.StringIO()
    configure(LogOptions(default=0, levels={"ike": 2, "esp": -1, "device": 3}), stream=out)
    assert logging.getLogger("ocfpy.ike").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("ocfpy.esp.worker").getEffectiveLevel() > logging.CRITICAL
    assert logging.getLogger("ocfpy.crypto.dispatcher").getEffectiveLevel() == AUDIT
    assert logging.getLogger("ocfpy.crypto.devices.hotplug").getEffectiveLevel() == RAW
    logging.getLogger("ocfpy.ike.sa").debug("ike debug shown")
    logging.getLogger("ocfpy.esp.worker").critical("esp silenced")
    logging.getLogger("ocfpy.crypto.dispatcher").info("crypto info hidden at 0")
    logging.getLogger("ocfpy.crypto.dispatcher").log(AUDIT, "crypto audit shown")
    text = out.getvalue()
    assert "ike debug shown" in text and "crypto audit shown" in text
    assert "esp silenced" not in text and "crypto info hidden" not in text


@pytest.mark.parametrize("verbosity, expected", [(0, 0), (1, 1), (2, 2), (3, 3), (9, 3)])
def test_verbosity_raises_but_never_lowers(verbosity, expected):
    opts = LogOptions(default=0, levels={"ike": 2})
    assert opts.level_of("esp", verbosity) == expected
    assert opts.level_of("ike", verbosity) == max(2, expected)


def test_one_line_per_event_with_the_subsystem_tag():
    out = io.StringIO()
    configure(LogOptions(), stream=out)
    log = logging.getLogger("ocfpy.ike.engine")
    log.info("<home|3> IKE_SA home[3] established\nsecond line")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("ocfpy.iked.control").exception("request failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("[IKE] ocfpy.ike.engine: <home|3> IKE_SA home[3] established | "
                             "second line")
    assert "[CTL] ERROR ocfpy.iked.control: request failed | Traceback" in lines[1]
    assert "RuntimeError: boom" in lines[1]


def test_journal_gets_priorities_and_no_timestamp(tmp_path):
    f = open(tmp_path / "stream", "w")  # noqa: SIM115
    st = os.fstat(f.fileno())
    assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fd=f.fileno())
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, fd=f.fileno())
    assert not stderr_is_journal({}, fd=f.fileno())
    f.close()
    rec = logging.LogRecord("ocfpy.ike.sa", logging.WARNING, __file__, 1, "peer gone", None, None)
    assert OneLineFormatter(timestamps=False, priority_prefix=True).format(rec) == \
        "<4>[IKE] WARNING ocfpy.ike.sa: peer gone"


def test_file_target_and_log_file_override(tmp_path):
    path = tmp_path / "iked.log"
    configure(LogOptions(target="stderr"), log_file=str(path))
    logging.getLogger("ocfpy.esp.worker").info("to the file")
    for h in logging.getLogger().handlers:
        h.flush()
    assert "[ESP] ocfpy.esp.worker: to the file" in path.read_text()


def test_unwritable_file_is_refused_with_the_reason(tmp_path):
    with pytest.raises(LogSetupError, match="cannot log to .*(No such file|directory)"):
        configure(LogOptions(target="file", file=str(tmp_path / "no" / "dir" / "x.log")))


def test_auto_target():
    assert LogOptions().resolve_target(foreground=True) == "stderr"
    assert LogOptions().resolve_target(foreground=False) == "syslog"
    assert LogOptions(file="/x").resolve_target(foreground=False) == "file"
    assert LogOptions(target="stderr").resolve_target(foreground=False) == "stderr"


def test_syslog_target_sends_to_dev_log(tmp_path, monkeypatch):
    """A datagram socket of the test's stands in for /dev/log."""
    path = str(tmp_path / "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", path)
    try:
        configure(LogOptions(syslog_facility="local3"), foreground=False)
        logging.getLogger("ocfpy.ike.sa").warning("child net{2} down")
        data = sock.recv(4096).decode()
    finally:
        sock.close()
    # <PRI> = facility * 8 + severity: local3 = 19, warning = 4
    assert data.startswith(f"<{19 * 8 + 4}>ocfpy-iked[{os.getpid()}]: [IKE] WARNING")
    assert data.rstrip("\0").endswith("child net{2} down")


def test_no_syslog_socket_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "absent"))
    with pytest.raises(LogSetupError, match="does not exist"):
        configure(LogOptions(), foreground=False)
    with pytest.raises(LogSetupError, match="does not exist"):  # before detaching
        logsetup.check(LogOptions(), foreground=False)
    # --log-file instead of syslog: fine, and check() leaves the logging set-up alone
    before = list(logging.getLogger().handlers)
    assert logsetup.check(LogOptions(), foreground=False, log_file=str(tmp_path / "f")) == "file"
    assert logging.getLogger().handlers == before


def _check(text: str):
    from ocfpy.iked.configfile import Table, _Loader

    schema = Table({"daemon": Table({"log": logsetup.log_schema()})})
    return _Loader(text, "iked.toml").table(schema, tomllib.loads(text), ())


def test_the_config_table_is_checked_with_file_line_key():
    from ocfpy.iked.configfile import ConfigError

    checked = _check('[daemon.log]\ntarget = "file"\nfile = "/var/log/iked.log"\nike = 2\n'
                     'default = 0\n')
    opts = LogOptions.from_table(checked["daemon"]["log"])
    assert opts == LogOptions(target="file", file="/var/log/iked.log", default=0,
                              levels={"ike": 2})
    with pytest.raises(ConfigError, match=r"iked.toml:3: daemon.log.esp: must be at most 4"):
        _check('[daemon.log]\nike = 1\nesp = 7\n')
    with pytest.raises(ConfigError, match=r"iked.toml:2: daemon.log.ikee: unknown key.*ike"):
        _check('[daemon.log]\nikee = 1\n')


# -- no secret at any level ------------------------------------------------------------------
def _forms(secret: bytes) -> set[str]:
    """The ways a key could appear in a log line: hex (either case, with : or space between
    bytes), base64, repr() of bytes, and the raw bytes as latin-1 text. The first 8 bytes too,
    for a dump cut short."""
    out = set()
    for s in (secret, secret[:8]):
        out |= {s.hex(), s.hex().upper(), s.hex(":"), s.hex(" "), s.hex(":").upper(),
                base64.b64encode(s).decode().rstrip("="), repr(s)[2:-1], s.decode("latin-1")}
    return out


def _leaks(log_text: str, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, s in secrets.items() if any(f in log_text for f in _forms(s))]


@pytest.fixture
def recorded_keys(monkeypatch):
    """Every key derived during the test, recorded by wrapping the real derivations (they
    still compute; nothing is replaced)."""
    from ocfpy.ike import keys as kdf
    from ocfpy.ike import rekey as rekey_mod
    from ocfpy.ike import sa as sa_mod

    secrets: dict[str, bytes] = {}

    def keep(name: str, value: bytes) -> None:
        if len(value) >= 8:  # shorter (none in the suites used) would match by chance
            secrets[f"{name}#{len(secrets)}"] = bytes(value)

    def wrap(module, fname, record):
        real = getattr(module, fname)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            record(args, kwargs, result)
            return result

        monkeypatch.setattr(module, fname, wrapper)

    wrap(kdf, "skeyseed", lambda a, k, r: (keep("g^ir", a[4]), keep("SKEYSEED", r)))
    wrap(kdf, "prf_plus", lambda a, k, r: (keep("prf+ key", a[2]), keep("prf+ out", r)))
    wrap(kdf, "ike_keys", lambda a, k, r: [keep(f.upper(), getattr(r, f)) for f in
                                           ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er",
                                            "sk_pi", "sk_pr")])
    wrap(kdf, "child_keys", lambda a, k, r: (
        [keep(f, getattr(r, f)) for f in ("encr_i2r", "integ_i2r", "encr_r2i", "integ_r2i")],
        keep("g^ir (CREATE_CHILD_SA)", k.get("shared_secret", a[7] if len(a) > 7 else b""))))
    wrap(kdf, "psk_auth", lambda a, k, r: keep("prf(PSK, pad)", k.get("padded") or b""))
    real_replacement = rekey_mod.replacement

    def replacement(old, initiator, spi_i, spi_r, chosen, shared, ni, nr, **kw):
        keep("g^ir (IKE rekey)", shared)
        return real_replacement(old, initiator, spi_i, spi_r, chosen, shared, ni, nr, **kw)

    monkeypatch.setattr(rekey_mod, "replacement", replacement)
    assert sa_mod.kdf is kdf  # the SA derives through the module we wrapped
    return secrets


def test_scanner_finds_a_key_that_was_logged(tmp_path):
    """The scan below can fail: a key logged in any of the usual ways is found."""
    key = bytes(range(32))
    for form in (key.hex(), repr(key), base64.b64encode(key).decode(), key[:8].hex(":")):
        assert _leaks(f"... SK_ei={form} ...", {"SK_ei": key}) == ["SK_ei"]
    assert _leaks("nothing here", {"SK_ei": key}) == []


def test_a_debug_log_of_a_full_exchange_holds_no_key(tmp_path, recorded_keys,
                                                     initiator_and_responder):  # noqa: F811
    from ocfpy.ike.events import ChildSaEstablished
    from tests.unit.ike.conftest import PSK

    path = tmp_path / "debug.log"
    # level 4 everywhere: the most a user can ask for (charon would add keys here)
    configure(LogOptions(target="file", file=str(path), default=4,
                         levels=dict.fromkeys(logsetup.SUBSYSTEMS, 4)))
    # IKE_SA_INIT + IKE_AUTH (PFS child), a CHILD_SA rekey with KE, an IKE_SA rekey, a delete
    pair = initiator_and_responder(["aes256-sha256-modp2048", "aes128gcm16-prfsha256-x25519"],
                                   ["aes256-sha256-modp2048"])
    pair.establish()
    child = pair.of_type("i", ChildSaEstablished)[0].spec
    pair.i.rekey_child(child.unique_id, pair.now)
    pair.run()
    (ike,) = pair.i.sa_list()
    pair.i.rekey_ike(ike["id"], pair.now)
    pair.run()
    (ike,) = pair.i.sa_list()
    pair.i.terminate(ike["id"], pair.now)
    pair.run()
    # The daemon logs engine events it has no handler for by str() (IkeDaemon._event), and a
    # debugging operator would log them all: do that with every event of the exchange.
    daemon_log = logging.getLogger("ocfpy.iked.daemon")
    for side in "ir":
        for ev in pair.events[side]:
            daemon_log.info("%s", ev)
            daemon_log.debug("%r", ev)
    logging.getLogger("ocfpy.ike.engine").debug("end of exchange")  # the capture works at DEBUG
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text(encoding="utf-8")

    for spec in (e.spec for side in "ir" for e in pair.of_type(side, ChildSaEstablished)):
        for way, keys in (("out", spec.outbound), ("in", spec.inbound)):
            for kind in ("encryption_key", "integrity_key"):
                if len(getattr(keys, kind)) >= 8:  # AEADs have no integrity key
                    recorded_keys[f"child {spec.unique_id} {way} {kind}"] = getattr(keys, kind)
    recorded_keys["PSK"] = PSK
    names = {n.split("#")[0] for n in recorded_keys}
    # the exchange did derive what the scan is about, and the log is not empty
    assert {"SK_D", "SK_EI", "SK_PR", "encr_i2r", "g^ir", "g^ir (IKE rekey)",
            "g^ir (CREATE_CHILD_SA)", "PSK"} <= names, names
    assert len(text.splitlines()) >= 10 and "[IKE] DEBUG ocfpy.ike.engine: end of exchange" in text
    assert "ChildSaEstablished" in text
    assert _leaks(text, recorded_keys) == []
