"""Fuzz targets: one callable per attack surface, shared by atheris (tests/fuzz/run.py) and the
plain-pytest regression replays (tests/fuzz/test_regressions.py).

A target is built once (``TARGETS[name]()``), then called with one input at a time. It raises
only when the input found a bug: an exception the code under test is not allowed to raise, or
a broken invariant (`Finding`). Everything an outsider can send is allowed to be *refused*;
nothing may crash, hang or reach the engine's internal-error path.

The IKE engine targets drive the engine through its facade only (receive_datagram,
datagrams_to_send, next_event, sa_list, stats), the way tests/unit/ike does; to forge
*authenticated* messages they learn the SK keys by recording what the engine hands to the
crypto dispatcher (a public constructor argument), never by reaching into the IKE SA.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path


class _LastError(logging.Handler):
    """Keeps the last ERROR record of ocfpy's loggers (the engine's internal-error path logs
    its exception), to put the traceback into the Finding."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.record: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.record = record

    def take(self) -> str:
        r, self.record = self.record, None
        if r is None:
            return "(see the log)"
        text = r.getMessage()
        if r.exc_info:
            text += "\n" + logging.Formatter().formatException(r.exc_info)
        return text


_ERRORS = _LastError()


def quiet_logging() -> None:
    """For the fuzzer's process only (tests/fuzz/run.py): the engine logs every refusal and a
    fuzzer would spend its time formatting log lines; errors are kept for the Finding. Not done
    at import, so pytest runs that collect this module keep their logging."""
    logging.disable(logging.WARNING)
    ocfpy_log = logging.getLogger("ocfpy")
    ocfpy_log.addHandler(_ERRORS)
    ocfpy_log.propagate = False


ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"

I_ADDR, R_ADDR, SPOOF = "10.0.0.1", "10.0.0.2", "10.0.0.66"
# The strict oracle (issue 13's rule, on by default; FUZZ_STRICT_UNAUTH=0 turns it off): the
# engine targets also fail when a raw, unauthenticated datagram carrying the live SA's SPIs
# gets an answer or changes what `sa list` shows.
STRICT_UNAUTH = os.environ.get("FUZZ_STRICT_UNAUTH", "1") == "1"
NOW = 1000.0


class Finding(AssertionError):
    """The input broke an invariant of the target (not a plain refusal)."""


def _dispatcher():
    from ocfpy.crypto.dispatcher import Dispatcher

    d = Dispatcher()
    if not d.registry.active():
        raise RuntimeError("no active crypto driver: the fuzz targets need the OpenSSL backend")
    return d


# -- IKE message decoding (codec) --------------------------------------------------------
class IkeDecode:
    """codec.decode (header + outer chain) and the rules table of unencrypted exchanges; what it
    accepts must encode again, to bytes that decode and encode to themselves."""

    def __init__(self) -> None:
        from ocfpy.ike import codec
        from ocfpy.ike.codec import rules
        from ocfpy.ike.errors import DecodeError

        self.codec, self.rules, self.DecodeError = codec, rules, DecodeError

    def __call__(self, data: bytes) -> None:
        try:
            msg = self.codec.decode(data)
            if self.rules.is_encrypted(msg.exchange):
                return
            msg.check_plain()
        except self.DecodeError:
            return
        # what we accepted must encode, and its encoding must be a fixed point (the decoder
        # keeps notes such as unknown transform attributes that the encoder rightly drops,
        # so the first re-encoding may differ from the input, the second may not)
        once = self.codec.encode(msg)
        twice = self.codec.encode(self.codec.decode(once))
        if once != twice:
            raise Finding("a message the decoder accepted does not survive encode/decode")


# -- SK payload: decrypt + inner parse, inputs that pass the ICV --------------------------
SK_SUITES = [("aes128gcm16", None), ("aes256", "sha256"), ("chacha20poly1305", None),
             ("aes128", "sha1")]


class IkeSk:
    """Input: suite(1) exchange(1) flags(1) first-inner(1) pad-mode(1) || plaintext.

    The plaintext is sealed with known keys inside the harness, so every input passes the
    integrity check and the fuzzer spends its time in the inner payload parser and the rules
    table (Message.decrypt). pad-mode bit 0 set: the harness appends valid padding; clear: the
    fuzzer's bytes are the whole padded plaintext (CBC: zero-extended to whole blocks)."""

    def __init__(self) -> None:
        from ocfpy.crypto import catalogue
        from ocfpy.ike import codec
        from ocfpy.ike.codec.sk import SK_HEADER_SIZE, SkCrypto
        from ocfpy.ike.errors import DecodeError

        self.codec, self.DecodeError, self.SK_HEADER_SIZE = codec, DecodeError, SK_HEADER_SIZE
        d = _dispatcher()
        self.pairs = []
        for encr, integ in SK_SUITES:
            te = catalogue.get(encr)
            ti = catalogue.get(integ) if integ else None
            ke = bytes(range(te.keymat_size))
            ka = bytes(range(100, 100 + ti.key_size)) if ti else b""
            send = SkCrypto(d, te, ti, (ke, ka), (ke, ka), d.random)
            recv = SkCrypto(d, te, ti, (ke, ka), (ke, ka), d.random)
            self.pairs.append((send, recv))

    def __call__(self, data: bytes) -> None:
        if len(data) < 5:
            return
        send, recv = self.pairs[data[0] % len(self.pairs)]
        exchange, flags, first_inner, mode = data[1], data[2] & 0x38, data[3], data[4]
        inner = data[5:]
        if mode & 1:
            plaintext = send.padded(inner)
        else:
            plaintext = inner + bytes(-len(inner) % send.block)
        sk_len = send.sk_length(len(plaintext))
        header = struct.pack("!8s8sBBBBLL", b"fuzz-spi", b"resp-spi", 46, 0x20, exchange, flags,
                             7, 28 + sk_len)
        raw = send.seal(header + bytes((first_inner, 0)) + sk_len.to_bytes(2, "big"), plaintext)
        msg = self.codec.decode(raw)
        try:
            msg.decrypt(recv)
        except self.codec.IntegrityCheckFailed as exc:
            raise Finding("a message sealed with the right keys failed its integrity check") from exc
        except self.DecodeError:
            return


# -- the IKE engine, live -----------------------------------------------------------------
class _Recording:
    """A Dispatcher that remembers every key it is asked to open a session with."""

    def __init__(self, real) -> None:
        self._real = real
        self.keys: list[tuple[object, bytes]] = []

    def open(self, algorithm, key=None, **kw):
        if key is not None:
            self.keys.append((algorithm, bytes(key)))
        return self._real.open(algorithm, key, **kw)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _configs():
    from tests.unit.ike.conftest import make_config

    i_cfg = make_config(I_ADDR, R_ADDR, "moon.example.org", "sun.example.org",
                        local_ts=["10.1.0.0/16"], remote_ts=["10.2.0.0/16"])
    r_cfg = make_config(R_ADDR, I_ADDR, "sun.example.org", "moon.example.org",
                        local_ts=["10.2.0.0/16"], remote_ts=["10.1.0.0/16"])
    return i_cfg, r_cfg


class _Live:
    """An established pair of engines (the unit tests' in-memory Pair) and the SK keys of each
    direction, found by trial-decrypting the captured IKE_AUTH messages with every key the
    engines opened."""

    def __init__(self, dispatcher, i_cfg, r_cfg) -> None:
        from ocfpy.crypto import catalogue
        from ocfpy.ike import codec
        from ocfpy.ike.codec.sk import SkCrypto
        from tests.unit.ike.conftest import Pair

        rec = _Recording(dispatcher)
        self.pair = pair = Pair(i_cfg, r_cfg, rec)
        pair.establish()
        (sa,) = pair.i.sa_list()
        if sa["state"] != "established":
            raise RuntimeError(f"the fuzz fixture did not establish: {sa}")
        self.spi_i, self.spi_r = bytes.fromhex(sa["spi_i"]), bytes.fromhex(sa["spi_r"])
        encr = catalogue.get(sa["algorithms"]["encr"])
        auth_i, auth_r = pair.wire[2][1], pair.wire[3][1]  # IKE_AUTH request and response
        self.to_r = self.to_i = None
        for _, key in rec.keys:
            if len(key) != encr.keymat_size:
                continue
            c = SkCrypto(dispatcher, encr, None, (key, b""), (key, b""), dispatcher.random)
            for raw, slot in ((auth_i, "to_r"), (auth_r, "to_i")):
                try:
                    codec.decode(raw).decrypt(c)
                except Exception:
                    continue
                c._iv = 1 << 40  # our IVs never collide with the engine's counter
                setattr(self, slot, c)
        if self.to_r is None or self.to_i is None:
            raise RuntimeError("could not learn the SK keys of the fuzz fixture")
        self.baseline = {"i": pair.i.sa_list(), "r": pair.r.sa_list()}


class _EngineTarget:
    """Input: mode(1) || rest.

    mode bit 0: forge an authenticated message (rest = exchange(1) flags(1) msgid-choice(1)
    first-inner(1) || inner payload chain, sealed with the direction's SK keys) instead of
    sending ``rest`` as a raw datagram. Bit 1: raw datagrams get the live SA's SPIs written over
    bytes 0..15 and a consistent length field (so they reach the SA, not the unknown-SPI drop).
    Bits 2-3: the source: the peer, the peer on 4500, a spoofed address, the spoofed address on
    4500. After every input the engine must not have taken its internal-error path; the pair is
    rebuilt whenever an input changed anything visible (so each input meets the same state)."""

    side = "r"

    def __init__(self) -> None:
        self.dispatcher = _dispatcher()
        self.cfgs = _configs()
        self.live: _Live | None = None
        self.strict = STRICT_UNAUTH

    def _fresh(self) -> _Live:
        if self.live is None:
            self.live = _Live(self.dispatcher, *self.cfgs)
        return self.live

    def engine_and_peer(self, live: _Live):
        p = live.pair
        return (p.r, I_ADDR, R_ADDR, live.to_r, True) if self.side == "r" else \
            (p.i, R_ADDR, I_ADDR, live.to_i, False)

    def datagram(self, live: _Live, data: bytes) -> bytes:
        from ocfpy.ike import codec
        from ocfpy.ike.codec import Buffer
        from ocfpy.ike.codec.payloads import pull_payloads
        from ocfpy.ike.errors import DecodeError

        mode, rest = data[0], data[1:]
        engine, peer, me, crypto, from_initiator = self.engine_and_peer(live)
        if mode & 1 and len(rest) >= 4:
            exchange, flags, mid_choice, first = rest[0], rest[1], rest[2], rest[3]
            # a chain the codec can parse is re-encoded through Message (the realistic case);
            # anything else is sealed as raw bytes, to reach the inner parser's error paths
            mid = {0: 2, 1: 3, 2: 0, 3: 1}.get(mid_choice & 7, mid_choice)
            flags = (flags & 0x20) | (0x08 if from_initiator else 0)
            try:
                payloads = pull_payloads(Buffer(rest[4:]), first)
            except (DecodeError, Exception):
                payloads = None
            if payloads is not None:
                msg = codec.Message(live.spi_i, live.spi_r, exchange, mid, bool(flags & 0x20),
                                    from_initiator, payloads)
                try:
                    return codec.encode(msg, crypto)
                except Exception:  # the encoder need not take what the decoder gave
                    pass
            inner = crypto.padded(rest[4:])
            sk_len = crypto.sk_length(len(inner))
            header = struct.pack("!8s8sBBBBLL", live.spi_i, live.spi_r, 46, 0x20, exchange,
                                 flags, mid, 28 + sk_len)
            return crypto.seal(header + bytes((first, 0)) + sk_len.to_bytes(2, "big"), inner)
        if mode & 2 and len(rest) >= 28:
            rest = live.spi_i + live.spi_r + rest[16:24] + len(rest).to_bytes(4, "big") + rest[28:]
        return rest

    def source(self, mode: int) -> tuple[str, int]:
        peer = I_ADDR if self.side == "r" else R_ADDR
        return [(peer, 500), (peer, 4500), (SPOOF, 500), (SPOOF, 4500)][(mode >> 2) & 3]

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        live = self._fresh()
        engine = self.engine_and_peer(live)[0]
        me = R_ADDR if self.side == "r" else I_ADDR
        datagram = self.datagram(live, data)
        before = engine.stats["internal_errors"]
        _ERRORS.take()
        engine.receive_datagram(datagram, (me, 500), self.source(data[0]), NOW)
        if engine.stats["internal_errors"] != before:
            raise Finding(f"engine internal error on an input: {_ERRORS.take()}")
        out = engine.datagrams_to_send(NOW)
        ev = engine.next_event()
        changed = engine.sa_list() != live.baseline[self.side]
        if self.strict and not (data[0] & 1) and datagram[:16] == live.spi_i + live.spi_r \
                and len(datagram) >= 28 and datagram[17] >> 4 == 2 and (out or changed):
            # issue 13's rule: a message that has not passed its integrity check changes
            # nothing and gets no reply (a version-2 message on the live SA's SPIs)
            raise Finding(f"an unauthenticated message on the live SA was answered "
                          f"({len(out)} datagrams) or changed it ({changed})")
        if out or ev is not None or changed:
            self.live = None  # the input changed something: next input meets a fresh pair


class IkeResponder(_EngineTarget):
    side = "r"


class IkeInitiator(_EngineTarget):
    """The established initiator (as IkeResponder, the other way), and with mode bit 4 set a
    *connecting* initiator: a fresh engine that has sent its IKE_SA_INIT request and receives
    ``rest`` as the response, its SPI_i written over bytes 0..7 (the only thing an off-path
    attacker must know to answer in the responder's place)."""

    side = "i"

    def __call__(self, data: bytes) -> None:
        if data and data[0] & 0x10:
            return self.connecting(data)
        return super().__call__(data)

    def connecting(self, data: bytes) -> None:
        from ocfpy.ike.engine import IkeEngine

        engine = IkeEngine(self.cfgs[0], self.dispatcher)
        engine.initiate("home", NOW)
        ((request, _, _),) = engine.datagrams_to_send(NOW)
        rest = data[1:]
        if len(rest) >= 28:
            rest = request[:8] + rest[8:24] + len(rest).to_bytes(4, "big") + rest[28:]
        _ERRORS.take()
        engine.receive_datagram(rest, (I_ADDR, 500), self.source(data[0]), NOW)
        if engine.stats["internal_errors"]:
            raise Finding(f"engine internal error on an input: {_ERRORS.take()}")
        engine.datagrams_to_send(NOW)


# -- ESP decapsulation ---------------------------------------------------------------------
ESP_SUITES = [("aes128gcm16", None), ("chacha20poly1305", None), ("aes128", "sha256"),
              ("aes256gcm16", None)]


class EspDecap:
    """Input: suite(1) mode(1) || bytes. mode bit 0: ``bytes`` is the plaintext (payload ||
    padding || pad length || next header, as the fuzzer wrote it) sealed with the SA's keys
    by the harness, so it passes the ICV and reaches the trailer checks; clear: ``bytes`` is a
    raw ESP packet. The inbound path must return a payload or a Drop, never raise."""

    def __init__(self) -> None:
        from ocfpy.crypto import catalogue
        from ocfpy.esp import packet

        self.packet = packet
        d = _dispatcher()
        self.sas = []
        for encr, integ in ESP_SUITES:
            te = catalogue.get(encr)
            ti = catalogue.get(integ) if integ else None
            ke = bytes(range(te.keymat_size))
            ka = bytes(range(50, 50 + ti.key_size)) if ti else b""
            for esn in (False, True):
                self.sas.append((packet.EspCrypto(d, 0x1234, encr, integ, ke, ka, esn=esn),
                                 esn))

    def __call__(self, data: bytes) -> None:
        if len(data) < 2:
            return
        sa, esn = self.sas[data[0] % len(self.sas)]
        body = data[2:]
        seq = 0x100000005 if esn else 5
        if data[1] & 1:
            if len(body) < 1:
                return
            # seal the fuzzer's bytes as the whole trailer-bearing plaintext: aligned by
            # zero-extending, then encrypted the way encapsulate does (without its trailer)
            plain = body + bytes(-len(body) % sa.align)
            pkt = self._seal(sa, seq, plain)
        else:
            pkt = body
            hdr = self.packet.parse_header(pkt)
            if hdr is not None:
                seq = (seq & ~0xFFFFFFFF) | hdr[1]
        (result,) = sa.decapsulate_batch([(pkt, seq)])
        if isinstance(result, self.packet.Drop):
            if data[1] & 1 and result is self.packet.Drop.AUTH:
                raise Finding("a packet sealed with the SA's keys failed its ICV")
            return
        payload, nh = result
        if not isinstance(payload, bytes | bytearray | memoryview) or not 0 <= nh <= 255:
            raise Finding(f"decapsulate returned {type(payload)}, {nh!r}")

    @staticmethod
    def _seal(sa, seq: int, plain: bytes) -> bytes:
        hdr = sa.spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
        iv = seq.to_bytes(8, "big") if sa.aead else bytes(sa.iv_size)
        if sa.aead:
            aad = hdr[:4] + seq.to_bytes(8, "big") if sa.esn else hdr
            return hdr + iv + sa.cipher.seal(iv, plain, aad)
        ct = hdr + iv + sa.cipher.encrypt(iv, plain)
        mac_in = ct + ((seq >> 32).to_bytes(4, "big") if sa.esn else b"")
        return ct + sa.mac.compute(mac_in)


class EspFraming:
    """The compiled ESP framing (ocfpy/esp/_framing.c) against its pure-Python twin
    (ocfpy/esp/framing.py) on the same bytes: the same wire packets, the same (payload, next
    header) or drop per packet, or the same exception class; anything else is a finding.

    Input: suite(1) mode(1) first_seq(8) || fields (2-octet length prefixed, up to 32).
    mode bit 0: inbound (else outbound: the fields are payloads, sealed as one batch); bit 1
    (inbound): each field is a whole plaintext (payload, padding, trailer as the fuzzer wrote
    it) sealed with the SA's key, so it passes the tag and reaches the trailer checks; else
    each field is a raw ESP packet; bit 2: ESN; bits 3-4: alignment 4, 1, 16 or 256; bits 5-7
    (outbound): the next header, 0-6 as 4, 41, 59, 0, 255, 17, 6, and 7 as tunnel mode (from
    the payload's IP version). The sequence number of packet i is first_seq + i (the fuzzer
    may run it past 64 bits: both must refuse with OverflowError)."""

    ALIGN = (4, 1, 16, 256)
    NEXT = (4, 41, 59, 0, 255, 17, 6, -1)

    def __init__(self) -> None:
        from ocfpy.esp import framing, packet

        self.framing, self.drops = framing, packet._DROPS
        # without the compiled helper there is nothing to compare: the Python twin alone
        # still must not raise
        self.c = framing._C
        d = _dispatcher()
        self.sas = [packet.EspCrypto(d, 0x1234, encr, None, bytes(range(48))[:size])
                    for encr, size in (("aes128gcm16", 20), ("chacha20poly1305", 36),
                                       ("aes256gcm8", 36))]

    @staticmethod
    def _run(fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # compared by class below
            return exc

    def __call__(self, data: bytes) -> None:
        if len(data) < 10:
            return
        sa = self.sas[data[0] % len(self.sas)]
        mode = data[1]
        first = int.from_bytes(data[2:10], "big")
        fields = _fields(data[10:], 32)
        esn = bool(mode & 4)
        align = self.ALIGN[(mode >> 3) & 3]
        py = self.framing
        if mode & 1:
            if mode & 2:
                fields = [self._seal(sa, first + i, f + bytes(-len(f) % align), esn)
                          for i, f in enumerate(fields)]
            items = [(f, (first + i) & ((1 << 64) - 1)) for i, f in enumerate(fields)]
            args = (sa.cipher.open_batch, items, esn, sa.icv_size, align, self.drops)
            want = self._run(py.open_frames_py, *args)
            got = self._run(self.c.open_frames, *args) if self.c else want
            if mode & 2 and not isinstance(want, Exception):
                if any(r is self.drops[1] for r in want):
                    raise Finding("a packet sealed with the SA's key failed its tag")
        else:
            nh = self.NEXT[mode >> 5]
            args = (sa.cipher.seal_batch, sa._spi_bytes, first, fields, nh, align, esn)
            want = self._run(py.seal_frames_py, *args)
            got = self._run(self.c.seal_frames, *args) if self.c else want
            if not isinstance(want, Exception):
                back = self._run(py.open_frames_py, sa.cipher.open_batch,
                                 [(w, first + i) for i, w in enumerate(want)], esn,
                                 sa.icv_size, align, self.drops)
                nhs = [nh if nh >= 0 else 4 if f and f[0] >> 4 == 4 else 41 for f in fields]
                if back != list(zip(fields, nhs, strict=True)):
                    raise Finding("what seal_frames built does not open to its payloads")
        if isinstance(want, Exception) or isinstance(got, Exception):
            if type(want) is not type(got):
                raise Finding(f"compiled: {got!r}, Python: {want!r}")
            if not isinstance(want, OverflowError):  # the fuzzer's seq past 64 bits only
                raise Finding(f"both refused a well-formed call: {want!r}")
        elif got != want:
            raise Finding("the compiled framing and the Python twin disagree")

    @staticmethod
    def _seal(sa, seq: int, plain: bytes, esn: bool) -> bytes:
        seq &= (1 << 64) - 1
        hdr = sa._spi_bytes + (seq & 0xFFFFFFFF).to_bytes(4, "big")
        iv = seq.to_bytes(8, "big")
        aad = sa._spi_bytes + iv if esn else hdr
        return hdr + iv + sa.cipher.seal(iv, plain, aad)


# -- the daemon's configuration file --------------------------------------------------------
class ConfigLoad:
    """ocfpy.iked.configfile.load on the fuzzed bytes as a file: ConfigError is the only
    exception it may raise."""

    def __init__(self) -> None:
        from ocfpy.iked import configfile

        self.configfile = configfile
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.gettempdir() if base is None else base
        self.path = os.path.join(self.dir, f"ocfpy-fuzz-{os.getpid()}.toml")

    def __call__(self, data: bytes) -> None:
        # written and removed per input: libFuzzer ends the process without running finalisers
        with open(self.path, "wb") as f:
            f.write(data)
        try:
            self.configfile.load(self.path)
        except self.configfile.ConfigError:
            pass
        finally:
            os.unlink(self.path)


# -- the control socket's request parser ----------------------------------------------------
class ControlLine:
    """ControlServer.handle_line with handlers that record their calls: it must answer every line
    with a JSON-serialisable {"ok": ...} object and call a handler only for a JSON object whose
    "cmd" names it."""

    COMMANDS = ("list", "initiate", "terminate", "why", "stats", "drivers")

    def __init__(self) -> None:
        import json

        from ocfpy.iked.control import CommandError, ControlServer

        self.json = json
        self.calls: list[dict] = []

        def record(request):
            self.calls.append(request)
            if request.get("fail"):
                raise CommandError("recorded failure")
            return {"echo": sorted(request)}

        self.server = ControlServer("/nonexistent/ocfpy-fuzz.sock",
                                    {c: record for c in self.COMMANDS})

    def __call__(self, data: bytes) -> None:
        self.calls.clear()
        coro = self.server.handle_line(data)
        try:
            coro.send(None)
        except StopIteration as stop:
            answer = stop.value
        else:  # pragma: no cover - our handlers never await
            coro.close()
            raise Finding("handle_line awaited with synchronous handlers")
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise Finding(f"answer is not an {{ok: bool}} object: {answer!r}")
        self.json.dumps(answer, default=str)  # what _reply sends
        if answer["ok"] and len(self.calls) != 1:
            raise Finding(f"ok answer after {len(self.calls)} handler calls")
        if self.calls and self.calls[0].get("cmd") not in self.COMMANDS:
            raise Finding("a handler ran for a command it was not registered for")


# -- what an IKE_AUTH carries before the peer's AUTH is verified ------------------------------
def _fields(data: bytes, n: int) -> list[bytes]:
    """``data`` cut into fields, each prefixed by a 2-octet length (the last takes the rest);
    at most ``n`` fields."""
    out, at = [], 0
    while at < len(data) and len(out) < n - 1:
        size = int.from_bytes(data[at:at + 2], "big")
        out.append(data[at + 2:at + 2 + size])
        at += 2 + size
    if at < len(data):
        out.append(data[at:])
    return out


class PeerAuth:
    """Input: fields (2-octet length prefixed): SIGNATURE_HASH_ALGORITHMS data, CERTREQ data,
    ID type (1 octet) + ID data, then the CERT payloads' DER. Runs what a responder does with
    them before the AUTH signature is checked: the hash list, the CERTREQ hashes against ours,
    the peer's identity (parsed, printed, compared with a configured DN), and the chain to a
    fixed root (ocfpy.ike.pubkey.verify_peer). Refusals are DecodeError or
    IkeProtocolError(AUTHENTICATION_FAILED); anything else, or a chain that validates, is a
    finding (no input can hold the root's key)."""

    def __init__(self) -> None:
        from ocfpy.ike import auth_sig, certs, pubkey
        from ocfpy.ike.errors import DecodeError, IkeProtocolError
        from ocfpy.ike.identity import Identity
        from tests.pki import NOW, three_level

        self.auth_sig, self.certs, self.pubkey, self.Identity = auth_sig, certs, pubkey, Identity
        self.errors = (DecodeError, IkeProtocolError)
        self.now = NOW
        root, inter, ee = three_level()
        self.store = pubkey.CertStore([], [("x509ca/root.pem", root.cert)], [])
        self.ours = {certs.ca_key_hash(inter.cert), certs.ca_key_hash(root.cert)}
        self.configured = Identity.parse("C=CH, O=ocfpy, CN=gw.example.org")

    def __call__(self, data: bytes) -> None:
        f = _fields(data, 3 + 16) + [b""] * 3
        hashes, certreq, ident, ders = f[0], f[1], f[2], [d for d in f[3:] if d]
        try:
            got = self.auth_sig.decode_hash_algorithms(hashes)
            if len(got) > len(self.auth_sig.HASH_NAMES) + self.auth_sig.MAX_UNKNOWN_HASHES:
                raise Finding(f"{len(got)} hash IDs kept")
        except self.errors[0]:
            pass
        kept = self.certs.requested_cas([certreq], self.ours)
        if not set(kept) <= self.ours or len(kept) != len(set(kept)):
            raise Finding("CERTREQ kept a hash that is not one of ours, or one twice")
        id_type, id_data = (ident[0], ident[1:]) if ident else (9, b"")
        peer = self.Identity(id_type, id_data)
        if len(str(peer)) > 4096:
            raise Finding(f"an ID of {len(id_data)} bytes printed as {len(str(peer))} characters")
        self.configured.matches(peer)
        if not ders:
            return
        try:
            self.pubkey.verify_peer(self.store, ders, 14, b"", b"", cacerts=[], signatures=None,
                                    peer_id=(id_type, id_data), id_label="IDi", now=self.now,
                                    dispatcher=None)
        except self.errors[1]:
            return
        raise Finding("a chain no one can have signed was accepted")


class Fragments:
    """Input: records of (message ID 1, fragment number 2, total 2, first inner 1, chunk
    length 2, chunk), each sealed as an SKF fragment with known keys inside the harness, so
    every one passes its ICV (RFC 7383 2.5) and the fuzzer drives the reassembly rules: the
    codec must take every well-numbered fragment, and the bounds must hold after each one."""

    def __init__(self) -> None:
        from ocfpy.crypto import catalogue
        from ocfpy.ike import fragments
        from ocfpy.ike.codec.header import Header, pull_header, push_header
        from ocfpy.ike.codec.sk import SkCrypto

        self.fragments, self.Header = fragments, Header
        self.pull_header, self.push_header = pull_header, push_header
        d = _dispatcher()
        te = catalogue.get("aes128gcm16")
        key = (bytes(range(te.keymat_size)), b"")
        self.send = SkCrypto(d, te, None, key, key, d.random)
        self.recv = SkCrypto(d, te, None, key, key, d.random)

    def __call__(self, data: bytes) -> None:
        fr = self.fragments
        r = fr.Reassembler(max_fragments=8, max_bytes=2048, timeout=30.0)
        opener = fr.open_with(self.recv)
        at, now = 0, 0.0
        while at + 8 <= len(data):
            mid, number, total, first, size = struct.unpack_from("!BHHBH", data, at)
            chunk = data[at + 8:at + 8 + size % 512]
            at += 8 + len(chunk)
            now += 1.0
            body = self.send.padded(chunk)
            skf_len = fr.SKF_HEADER_SIZE + self.send.iv_size + len(body) + self.send.icv_size
            h = self.Header(b"fuzz-spi", b"resp-spi", fr.SKF_PAYLOAD_TYPE, 0x20, 35, 0x08, mid,
                            28 + skf_len)
            prefix = self.push_header(h) + struct.pack("!BBHHH", first, 0, skf_len, number,
                                                        total)
            raw = self.send.seal(prefix, body)
            try:
                skf = fr.parse_fragment_message(raw, self.pull_header(raw))
            except fr.DecodeError:
                if 1 <= number <= total:
                    raise Finding(f"fragment {number} of {total} refused by the codec") from None
                continue
            done = r.add(raw, mid, skf, opener, now)
            if r.held_bytes > r.max_bytes:
                raise Finding(f"{r.held_bytes} bytes held, max {r.max_bytes}")
            p = r.pending
            if p is not None and not p[1] <= p[2] <= r.max_fragments:
                raise Finding(f"pending {p}")
            if done is not None and done.message_id != mid:
                raise Finding("completed a message other than the one fragmented")


# -- the userspace dataplane's offloads (ocfpy/esp/offload.py, udpgso.py) --------------------
def _records(data: bytes) -> list[bytes]:
    """``data`` as records, each a 2-octet length then that many bytes (the last may be short)."""
    out, at = [], 0
    while at + 2 <= len(data):
        n = struct.unpack_from("!H", data, at)[0] % 2048
        out.append(data[at + 2:at + 2 + n])
        at += 2 + n
    return out


def _normal(p: bytes) -> bytes:
    """A segment without what the kernel may rewrite when it cuts a super-packet again: the
    IPv4 ID and header checksum (inet_gso_segment), and the transport checksum, whose value
    the caller checks separately (0x0000 and 0xFFFF both verify; a UDP/IPv4 0 means none)."""
    b = bytearray(p)
    ip = 20 if b[0] >> 4 == 4 else 40
    proto = b[9] if ip == 20 else b[6]
    if ip == 20:
        b[4:6] = b[10:12] = b"\0\0"
    at = ip + (16 if proto == 6 else 6)
    b[at:at + 2] = b"\0\0"
    return bytes(b)


class Offload:
    """Input: mode(1) || rest; mode % 4 selects:

    0. ``rest`` is a frame read from the TUN (virtio_net_hdr || packet): ``split`` must yield
       a list of packets, and every segment it cuts from a GSO request must be a packet the
       kernel takes alone (IP length, header and transport checksums: ``offload._whole_py``).
    1. ``rest`` is records of decrypted packets (2-octet length || bytes), what an
       authenticated peer sent; 2. the same records are a template (flags, sequence step,
       size) from which the harness builds valid TCP segments of one or two flows, so runs
       form. ``coalesce`` must account for every packet once, put only whole segments
       (``_whole_py``) in a run, stay under 64 KiB, and a run cut again by ``split`` (what the
       kernel does on forwarding) must give back the segments it was made of.
    3. ``rest`` is a UDP_GRO read: segment size(4, native order) || coalesced bytes:
       ``udpgso.cut`` must give every byte once, in order, no empty datagram, each the segment
       size but the last; then each is classified as the worker does (never raises)."""

    def __init__(self) -> None:
        import sys

        from ocfpy.esp import gso, offload, udpencap, udpgso

        self.offload, self.gso, self.udpgso, self.udpencap = offload, gso, udpgso, udpencap
        self.order = sys.byteorder

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        mode, rest = data[0] % 4, data[1:]
        if mode == 0:
            self._split(rest)
        elif mode == 1:
            self._coalesce(_records(rest), bool(data[0] & 4))
        elif mode == 2:
            self._coalesce(self._built(rest), bool(data[0] & 4))
        else:
            self._gro(rest)

    def _split(self, frame: bytes) -> None:
        off = self.offload
        out = off.split(frame)
        if not isinstance(out, list) or not all(isinstance(p, bytes) for p in out):
            raise Finding(f"split returned {out!r:.200}")
        if len(frame) < 10 or frame[1] & 0x7F == 0 or not out:
            return
        for seg in out:
            proto = seg[9] if seg[0] >> 4 == 4 else seg[6]
            if (seg[0] == 0x45 or seg[0] >> 4 == 6) and not off._whole_py(seg, proto):
                raise Finding(f"split cut a segment the kernel would refuse: {seg[:64].hex()}")

    def _built(self, rest: bytes) -> list[bytes]:
        """Valid TCP/IPv4 segments from 4-octet records: flags, size step, flow/version,
        sequence skip."""
        out = []
        seq = {0: 1000, 1: 1000}
        for at in range(0, len(rest) - 3, 4):
            flags, size, flow, skip = rest[at], rest[at + 1] * 8, rest[at + 2], rest[at + 3]
            f = flow & 1
            v6 = bool(flow & 2)
            payload = bytes([at & 0xFF]) * size
            seq[f] = (seq[f] + (skip if skip > 250 else 0)) & 0xFFFFFFFF
            out.append(self._tcp(v6, 40000 + f, seq[f], flags | 0x10, payload))
            seq[f] = (seq[f] + size) & 0xFFFFFFFF
        return out

    def _tcp(self, v6: bool, sport: int, seq: int, flags: int, payload: bytes) -> bytes:
        s = self.gso.ones_complement_sum
        th = bytearray(struct.pack("!HHIIBBHHH", sport, 5201, seq, 9, 5 << 4, flags, 501, 0, 0))
        n = 20 + len(payload)
        if v6:
            src, dst = bytes(15) + b"\1", bytes(15) + b"\2"
            ip = struct.pack("!IHBB", 6 << 28, n, 6, 63) + src + dst
        else:
            src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
            ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + n, 7, 0x4000, 63, 6, 0)
                           + src + dst)
            ip[10:12] = (~s(bytes(ip)) & 0xFFFF).to_bytes(2, "big")
        pseudo = src + dst + struct.pack("!IxxxB", n, 6)
        c = ~s(pseudo + bytes(th) + payload) & 0xFFFF
        th[16:18] = c.to_bytes(2, "big")
        return bytes(ip) + bytes(th) + payload

    def _coalesce(self, packets: list[bytes], udp: bool) -> None:
        off = self.offload
        out = off.coalesce(packets, udp=udp)
        at = 0
        for hdr, pkt, count in out:
            pkt = bytes(pkt)
            if count < 1 or len(hdr) != 10:
                raise Finding(f"a write of {count} segments, header {hdr!r}")
            run = packets[at:at + count]
            at += count
            if count == 1:
                if hdr != self.gso.PLAIN or pkt != run[0]:
                    raise Finding("a packet on the plain path was changed")
                continue
            if len(pkt) > off.MAX_SUPER:
                raise Finding(f"a super-packet of {len(pkt)} bytes")
            for q in run:
                proto = q[9] if q[0] >> 4 == 4 else q[6]
                if not off._whole_py(q, proto):
                    raise Finding(f"a segment the kernel would refuse joined a run: {q[:64].hex()}")
            again = off.split(hdr + pkt)
            if not all(off._whole_py(a, proto) for a in again) or \
                    [_normal(a) for a in again] != [_normal(q) for q in run]:
                raise Finding(f"a run of {count} is cut again into {len(again)} other segments")
        if at != len(packets):
            raise Finding(f"{len(packets)} packets in, {at} accounted for")

    def _gro(self, rest: bytes) -> None:
        if len(rest) < 4:
            return
        u = self.udpgso
        size = int.from_bytes(rest[:4], self.order)
        data = rest[4:]
        parts = u.cut(data, [(u.SOL_UDP, u.UDP_GRO, rest[:4])])
        if b"".join(parts) != data or (data and any(not p for p in parts)):
            raise Finding(f"cut lost or added bytes: size {size}, {len(data)} bytes")
        if 0 < size < len(data) and any(len(p) != size for p in parts[:-1]):
            raise Finding(f"cut datagrams of the wrong size: {[len(p) for p in parts]}")
        for p in parts:
            self.udpencap.classify(p)


TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "ike_decode": IkeDecode,
    "ike_sk": IkeSk,
    "ike_responder": IkeResponder,
    "ike_initiator": IkeInitiator,
    "esp_decap": EspDecap,
    "esp_framing": EspFraming,
    "config_load": ConfigLoad,
    "control_line": ControlLine,
    "peer_auth": PeerAuth,
    "fragments": Fragments,
    "offload": Offload,
}

__all__ = ["CORPUS", "REGRESSIONS", "TARGETS", "Finding"]
