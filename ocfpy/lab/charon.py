"""strongSwan's charon as a peer: one daemon per network namespace, driven over vici.

Every instance gets its own strongswan.conf (an explicit plugin load list, nothing from
/etc), its own vici socket and log file under a private work directory, and a private
``/run`` (``/usr/lib/ipsec/charon`` hard-codes ``/var/run/charon.pid``), so several charons
and a system one never meet. The userspace ESP dataplane ``kernel-libipsec`` (ESP over a TUN
device) is loaded before ``kernel-netlink``: the host kernel has no XFRM ESP. With it charon
fakes a NAT, so IKE moves to UDP 4500 after IKE_SA_INIT and ESP is UDP-encapsulated.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ocfpy.lab.netlab import Namespace

log = logging.getLogger(__name__)

CHARON = Path("/usr/lib/ipsec/charon")
PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")
# Order matters: kernel-libipsec must come before kernel-netlink, and kdf (prf+ for the
# openssl plugin) is only loaded when named.
LOAD = ("random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 kdf pem pkcs1 x509 "
        "pubkey revocation constraints kernel-libipsec kernel-netlink socket-default vici")


def unavailable_reason() -> str | None:
    """Why charon cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "charon in network namespaces needs root"
    if not CHARON.exists():
        return f"{CHARON} missing (apt-get install strongswan-charon libcharon-extra-plugins " \
               "libstrongswan-standard-plugins libstrongswan-extra-plugins)"
    for plugin in ("kernel-libipsec", "vici", "curve25519", "kdf"):
        if not (PLUGIN_DIR / f"libstrongswan-{plugin}.so").exists():
            return f"strongSwan plugin {plugin} missing from {PLUGIN_DIR}"
    try:
        import vici  # noqa: F401
    except ImportError:
        return "the PyPI package 'vici' is not installed (pip install vici)"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') missing"
    return None


def render_conf(tree: Mapping[str, Any], indent: int = 0) -> str:
    """strongswan.conf syntax from nested dicts (values: str, int, bool)."""
    pad = "  " * indent
    lines = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(render_conf(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            if isinstance(value, bool):
                value = "yes" if value else "no"
            lines.append(f"{pad}{key} = {value}")
    return "\n".join(lines)


def decode(value: Any) -> Any:
    """vici answers carry bytes; make them plain str for comparisons and JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def psk_connection(*, local_addr: str, remote_addr: str, local_id: str, remote_id: str,
                   proposals: Iterable[str] = ("aes128gcm16-prfsha256-x25519",),
                   children: Mapping[str, Mapping[str, Any]] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """A vici ``load-conn`` body for an IKEv2 PSK connection (mobike off, see the docs)."""
    conn: dict[str, Any] = {
        "version": 2, "mobike": "no",
        "local_addrs": [local_addr], "remote_addrs": [remote_addr],
        "proposals": list(proposals),
        "local": {"auth": "psk", "id": local_id},
        "remote": {"auth": "psk", "id": remote_id},
        "children": {k: dict(v) for k, v in (children or {}).items()},
    }
    conn.update(extra)
    return conn


def child(local_ts: Iterable[str], remote_ts: Iterable[str],
          esp_proposals: Iterable[str] = ("aes128gcm16",), **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"local_ts": list(local_ts), "remote_ts": list(remote_ts),
                            "esp_proposals": list(esp_proposals), "mode": "tunnel"}
    body.update(extra)
    return body


class Charon:
    """One charon in ``host``'s namespace; ``start()``/``stop()`` or use it as a context."""

    def __init__(self, host: Namespace, workdir: str | os.PathLike[str], *,
                 settings: Mapping[str, Any] | None = None, ike_log: int = 1,
                 load: str = LOAD) -> None:
        self.host = host
        self.dir = Path(workdir)
        self.vici_path = self.dir / "charon.vici"
        self.log_path = self.dir / "charon.log"
        self._settings = dict(settings or {})
        self._ike_log = ike_log
        self._load = load
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: Any = None
        self._conns: dict[str, dict[str, Any]] = {}
        self._secrets: dict[str, tuple[bytes, list[str]]] = {}

    def config(self) -> str:
        charon: dict[str, Any] = {
            "load": self._load,
            "install_routes": True,
            "plugins": {
                "vici": {"socket": f"unix://{self.vici_path}"},
                "kernel-libipsec": {"allow_peer_ts": True},
                # IKE/ESP packets carry mark 0x42 and skip the routes into the tunnel.
                "kernel-netlink": {"fwmark": "!0x42"},
                "socket-default": {"fwmark": "0x42"},
            },
            "filelog": {
                "stderr": {"default": 0},
                "main": {"path": str(self.log_path), "time_format": "%T", "ike_name": True,
                         "append": False, "flush_line": True, "default": 1,
                         "ike": self._ike_log, "cfg": 2, "knl": 1, "esp": 1},
            },
            "syslog": {"daemon": {"default": -1}},
        }
        _merge(charon, self._settings)
        return render_conf({"charon": charon}) + "\n"

    def start(self, timeout: float = 10.0) -> Charon:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(exist_ok=True)
        conf = self.dir / "strongswan.conf"
        conf.write_text(self.config())
        self.vici_path.unlink(missing_ok=True)
        # `ip netns exec` gives the command a private mount namespace: bind our /run there.
        script = (f"mount --bind {self.dir / 'run'} /run && "
                  f"exec env STRONGSWAN_CONF={conf} {CHARON}")
        out = open(self.dir / "stdout.log", "wb")  # noqa: SIM115 (owned by the process)
        self._proc = subprocess.Popen(self.host.argv("sh", "-c", script), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + timeout
        while not self.vici_path.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(f"charon in {self.host.name} exited with {self._proc.returncode}"
                                   f": {self.tail(self.dir / 'stdout.log')}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"charon in {self.host.name}: no vici socket after {timeout}s")
            time.sleep(0.01)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def session(self, timeout: float = 10.0) -> Any:
        """A new vici session (one per thread; materialise streamed answers with list())."""
        import vici

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(str(self.vici_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                # The socket file appears just before charon listens on it.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        return vici.Session(sock)

    @property
    def vici(self) -> Any:
        """A shared session for simple request/answer use from one thread."""
        if self._session is None:
            self._session = self.session()
        return self._session

    # -- convenience over vici ------------------------------------------------------------
    def load_psk(self, secret: str | bytes, owners: Iterable[str] = (), key_id: str = "psk") -> None:
        data = secret if isinstance(secret, bytes) else secret.encode()
        self.vici.load_shared({"id": key_id, "type": "IKE", "data": data, "owners": list(owners)})
        self._secrets[key_id] = (data, list(owners))
        self._write_swanctl()

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None:
        self.vici.load_conn({name: dict(body)})
        self._conns[name] = dict(body)
        self._write_swanctl()

    def swanctl_conf(self) -> str:
        """What was loaded over vici, as a swanctl.conf: kept next to the logs so that a failed
        run can be replayed by hand (`swanctl --load-all --file DIR/swanctl.conf --uri ...`)."""
        secrets: dict[str, Any] = {}
        for key_id, (data, owners) in self._secrets.items():
            entry: dict[str, Any] = {f"id-{i}": o for i, o in enumerate(owners, 1)}
            entry["secret"] = "0x" + data.hex()  # any byte string, no quoting trouble
            secrets[f"ike-{key_id}"] = entry
        tree = {"connections": {k: _swanctl_values(v) for k, v in self._conns.items()},
                "secrets": secrets}
        return render_conf(tree) + "\n"

    def _write_swanctl(self) -> None:
        if len(self._conns) <= 50:  # the benchmarks load hundreds: not worth the rewrites
            (self.dir / "swanctl.conf").write_text(self.swanctl_conf())

    def initiate(self, ike: str, child: str | None = None, timeout_ms: int = 10000) -> list[Any]:
        """Initiate and wait; raises vici.exception.CommandException with charon's errmsg."""
        req: dict[str, Any] = {"ike": ike, "timeout": timeout_ms, "init-limits": "no"}
        if child:
            req["child"] = child
        return decode(list(self.vici.initiate(req)))

    def list_sas(self, ike: str | None = None) -> dict[str, dict[str, Any]]:
        """IKE_SAs by connection name (the last one wins if a name has several)."""
        out: dict[str, dict[str, Any]] = {}
        for entry in list(self.vici.list_sas({"ike": ike} if ike else None)):
            out.update(decode(entry))
        return out

    def list_conns(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in list(self.vici.list_conns()):
            out.update(decode(entry))
        return out

    def list_sa_entries(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, v) for entry in list(self.vici.list_sas()) for k, v in decode(entry).items()]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def tail(path: Path, lines: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self._session is not None:
            try:
                self._session.transport.close()
            except Exception:  # noqa: BLE001 (closing a dead socket)
                pass
            self._session = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("charon %d ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> Charon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _swanctl_values(tree: Mapping[str, Any]) -> dict[str, Any]:
    """vici values -> swanctl.conf values (lists become comma lists)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _swanctl_values(value)
        elif isinstance(value, list | tuple):
            out[key] = ", ".join(str(v) for v in value)
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
