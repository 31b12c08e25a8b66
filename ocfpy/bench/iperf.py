"""One iperf3 measurement between two namespaces: a one-shot server, one client run (JSON)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from ocfpy.lab.netlab import Namespace

IPERF_PORT = 5201


def run(client: Namespace, server: Namespace, args: list[str], seconds: float,
        error: type[Exception] = RuntimeError) -> dict[str, Any]:
    """iperf3 from the client gateway's inner host to the server gateway's: its JSON result;
    retries while the server is not listening yet, raises ``error`` with iperf3's own words
    otherwise, and always stops the server."""
    server_ip, client_ip = server.inner, client.inner
    proc_server = subprocess.Popen(server.argv("iperf3", "-s", "-1", "-B", server_ip,
                                          "-p", str(IPERF_PORT)),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _attempt in range(50):
            proc = subprocess.run(client.argv("iperf3", "-c", server_ip, "-B", client_ip,
                                         "-p", str(IPERF_PORT), "-t", str(seconds), "-J", *args),
                                  capture_output=True, text=True, timeout=seconds + 30)
            result = json.loads(proc.stdout or "{}")
            err = result.get("error", "")
            if "unable to connect" in err or "Connection refused" in err:
                time.sleep(0.1)  # the server is not listening yet
                continue
            if err or proc.returncode:
                raise error(f"iperf3 {' '.join(args) or 'TCP'}: "
                            f"{err or proc.stderr.strip()[-500:]}")
            return result
        raise error("the iperf3 server never accepted a connection")
    finally:
        if proc_server.poll() is None:
            proc_server.terminate()
        try:
            proc_server.wait(5)
        except subprocess.TimeoutExpired:
            proc_server.kill()
            proc_server.wait(5)


def udp_received(result: dict[str, Any], payload: int, seconds: float) -> tuple[float, int]:
    """A UDP run's packets per second that reached the server, and how many did. The server's
    own count (``sum_received``, iperf3 >= 3.9): the client's ``sum`` packets minus its
    lost_packets counts the packets lost after the last one that arrived (a flood's tail,
    still queued when the run stopped) as received."""
    end = result["end"]
    if "sum_received" in end:
        s = end["sum_received"]
        received = int(s["bytes"]) // payload
    else:
        s = end["sum"]
        received = s["packets"] - s["lost_packets"]
    return received / (s["seconds"] or seconds), received
