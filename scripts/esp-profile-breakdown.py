"""Where each microsecond per ESP packet goes, from the cProfile files that
`ocfpy bench esp --profile DIR` leaves (one per worker process).

    .venv/bin/python scripts/esp-profile-breakdown.py DIR [DIR...]

For each directory, the carrying workers (the outbound worker with the most AEAD seals, the
inbound one with the most opens: a's outbound and b's inbound in the bench) are summed by
category of function (own time, the poll wait left out) and divided by the packets the
worker sealed or opened (the calls of the AEAD's encrypt / decrypt). cProfile's own overhead
inflates every Python call (a few hundred ns each), so the figures are for comparing
profiles with each other, not for absolute cost (scripts/esp-cpu-per-packet.py gives that).
"""

from __future__ import annotations

import pstats
import sys
from pathlib import Path

# (category, test on "file:line(function)" as pstats names it): the first match wins
CATEGORIES = [
    ("poll wait", lambda f: "select.select" in f or "select.poll" in f or "epoll" in f),
    ("AEAD (OpenSSL)", lambda f: "AESGCM" in f or "ChaCha20Poly1305" in f),
    ("ESP framing, compiled", lambda f: "_framing" in f),
    ("ESP framing, Python", lambda f: f.startswith(("packet.py", "framing.py"))),
    ("session + driver batch", lambda f: f.startswith(("session.py", "aead.py"))),
    ("system calls", lambda f: any(s in f for s in (
        "posix.read", "posix.write", "posix.writev", "sendto", "recvfrom", "recvmsg",
        "sendmsg", "recv_into", "_mmsg.send"))),
    ("replay window", lambda f: f.startswith("replay.py")),
    ("SPD / selectors", lambda f: f.startswith("spd.py")),
    ("offloads (cut, coalesce, csum)", lambda f: f.startswith(("offload.py", "gso.py",
                                                               "udpgso.py")) or "_csum" in f),
    ("worker loop (batching, counters)", lambda f: f.startswith(("worker.py", "sad.py",
                                                                "counters.py"))),
]


def categorize(name: str) -> str:
    for cat, test in CATEGORIES:
        if test(name):
            return cat
    return "other"


def load(path: Path) -> tuple[dict[str, float], int, str]:
    st = pstats.Stats(str(path))
    cats: dict[str, float] = {}
    packets = 0
    role = "out" if "esp-out" in path.name else "in"
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in st.stats.items():
        name = f"{Path(file).name}:{line}({func})" if file != "~" else f"~({func})"
        cat = categorize(name)
        cats[cat] = cats.get(cat, 0.0) + tt
        if ("AESGCM" in func or "ChaCha20Poly1305" in func) and \
                (("encrypt" in func) if role == "out" else ("decrypt" in func)):
            packets += nc
    return cats, packets, role


def main(dirs: list[str]) -> None:
    for d in dirs:
        best: dict[str, tuple[int, dict[str, float], str]] = {}
        for prof in sorted(Path(d).glob("esp-*.prof")):
            cats, packets, role = load(prof)
            if packets > best.get(role, (0, {}, ""))[0]:
                best[role] = (packets, cats, prof.name)
        print(f"## {d}")
        for role in ("out", "in"):
            if role not in best:
                continue
            packets, cats, name = best[role]
            busy = sum(v for k, v in cats.items() if k != "poll wait")
            print(f"{role}bound worker {name}: {packets} packets, "
                  f"{busy / packets * 1e6:.2f} us per packet (poll wait excluded)")
            for cat, v in sorted(cats.items(), key=lambda kv: -kv[1]):
                if cat == "poll wait":
                    continue
                print(f"  {cat:34s} {v / packets * 1e6:6.2f} us  {v / busy * 100:5.1f}%")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
