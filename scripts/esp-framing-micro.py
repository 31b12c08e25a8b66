"""Per-packet cost of the ESP framing and of the batched send, compiled vs pure Python, side
by side in one run, alternating (best of 9 rounds of 100 batches of 64 packets each).

    .venv/bin/python scripts/esp-framing-micro.py

framing: EspCrypto's AEAD path (aes128gcm16, openssl session) through framing.seal_frames /
open_frames, compiled and Python twin, and the session's seal_batch alone for reference (what
the framing wraps). send: 64 datagrams to a bound loopback UDP socket per call, sendmmsg (the
_mmsg helper) vs a sendto each, the receiver drained between calls (outside the timing);
loopback includes the receiving side's kernel work, as the veth does in the tunnel.
"""
import json
import os
import socket
import time

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.esp import framing, packet, sendbatch

ROUNDS, BATCHES, N = 9, 100, 64


def per_packet(calls: dict, between=None) -> dict:
    """{name: fn()}: best per-packet microseconds of each, rounds alternating between them."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(ROUNDS):
        for name, fn in calls.items():
            spent = 0.0
            for _ in range(BATCHES):
                if between is not None:
                    between()
                t0 = time.perf_counter()
                fn()
                spent += time.perf_counter() - t0
            best[name] = min(best[name], spent / BATCHES / N * 1e6)
    return {k: round(v, 2) for k, v in best.items()}


def framing_calls(sa, payloads: list[bytes]) -> dict:
    impls = {"python": (framing.seal_frames_py, framing.open_frames_py)}
    if framing.COMPILED:
        impls["compiled"] = (framing._C.seal_frames, framing._C.open_frames)
    wires = framing.seal_frames_py(sa.cipher.seal_batch, sa._spi_bytes, 1, payloads, -1,
                                   sa.align, False)
    items = [(w, 1 + i) for i, w in enumerate(wires)]
    calls = {}
    for name, (seal, open_) in impls.items():
        calls[f"seal_{name}_us"] = lambda seal=seal: seal(
            sa.cipher.seal_batch, sa._spi_bytes, 1, payloads, -1, sa.align, False)
        calls[f"open_{name}_us"] = lambda open_=open_: open_(
            sa.cipher.open_batch, items, False, sa.icv_size, sa.align, packet._DROPS)
    plain = [(i.to_bytes(8, "big"), p + b"\x01\x02\x02\x04", b"\0" * 8)
             for i, p in enumerate(payloads)]
    calls["seal_batch_alone_us"] = lambda: sa.cipher.seal_batch(plain)
    return calls


def send_calls(tx, dest, data: list[bytes]) -> dict:
    calls = {"sendto_us": lambda: sendbatch.send_each(tx, data, dest, _ignore)}
    if sendbatch.COMPILED:
        calls["sendmmsg_us"] = lambda: sendbatch.send_batched(tx, data, dest, _ignore)
    return calls


def _ignore(exc: OSError) -> None:
    raise exc  # the receiver is drained before every call: nothing may be refused


def main() -> None:
    d = Dispatcher()
    out: dict = {"framing": {}, "send": {}}
    for size in (64, 1400):
        sa = packet.EspCrypto(d, 0x1234, "aes128gcm16", None, os.urandom(20))
        payloads = [b"\x45" + os.urandom(size - 1) for _ in range(N)]
        out["framing"][size] = per_packet(framing_calls(sa, payloads))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)

    def drain() -> None:
        try:
            while True:
                rx.recv(65535)
        except BlockingIOError:
            pass

    for size in (64, 1400):
        out["send"][size] = per_packet(send_calls(tx, rx.getsockname(), [bytes(size)] * N),
                                       drain)
    out["load_average"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
