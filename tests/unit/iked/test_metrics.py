"""The metrics endpoint, scraped over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import tomllib
import urllib.error
import urllib.request

import pytest

pytest.importorskip("prometheus_client", reason="the metrics extra (prometheus-client) is not "
                    "installed; the test extra installs it")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ocfpy.iked.metrics import (  # noqa: E402
    MetricsError,
    MetricsServer,
    MetricsSnapshot,
    listen_converter,
    parse_listen,
)

SNAP = MetricsSnapshot(
    ike_sas={"ESTABLISHED": 2, "CONNECTING": 1},
    child_sas={"INSTALLED": 3},
    negotiation_failures={"NO_PROPOSAL_CHOSEN": 4, "AUTHENTICATION_FAILED": 1},
    rekeys={"ike": 5, "child": 7},
    dpd_failures=2,
    packets={"in": 100, "out": 90},
    bytes={"in": 150000, "out": 120000},
    drops={"replay": 3, "auth": 1, "no_sa": 6},
    crypto_ops={"openssl": 1234, "af_alg": 56},
    crypto_failovers={"af_alg": 1},
)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def _scrape(snapshot, *paths: str) -> list[tuple[int, str, str]]:
    server = await MetricsServer(snapshot, "127.0.0.1", 0).start()
    try:
        base = server.url.rsplit("/", 1)[0]
        return [await asyncio.to_thread(_get, base + p) for p in paths]
    finally:
        await server.close()


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_figure_of_the_snapshot_is_served():
    calls = []

    def snapshot() -> MetricsSnapshot:
        calls.append(1)
        return SNAP

    ((code, ctype, text),) = asyncio.run(_scrape(snapshot, "/metrics"))
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert len(calls) == 1  # read at the scrape, once
    got = _samples(text)
    expected = {
        ("ocfpy_ike_sas", (("state", "ESTABLISHED"),)): 2,
        ("ocfpy_ike_sas", (("state", "CONNECTING"),)): 1,
        ("ocfpy_child_sas", (("state", "INSTALLED"),)): 3,
        ("ocfpy_ike_negotiation_failures_total", (("reason", "NO_PROPOSAL_CHOSEN"),)): 4,
        ("ocfpy_ike_negotiation_failures_total", (("reason", "AUTHENTICATION_FAILED"),)): 1,
        ("ocfpy_rekeys_total", (("kind", "ike"),)): 5,
        ("ocfpy_rekeys_total", (("kind", "child"),)): 7,
        ("ocfpy_dpd_failures_total", ()): 2,
        ("ocfpy_dataplane_packets_total", (("direction", "in"),)): 100,
        ("ocfpy_dataplane_packets_total", (("direction", "out"),)): 90,
        ("ocfpy_dataplane_bytes_total", (("direction", "in"),)): 150000,
        ("ocfpy_dataplane_bytes_total", (("direction", "out"),)): 120000,
        ("ocfpy_dataplane_drops_total", (("reason", "replay"),)): 3,
        ("ocfpy_dataplane_drops_total", (("reason", "auth"),)): 1,
        ("ocfpy_dataplane_drops_total", (("reason", "no_sa"),)): 6,
        ("ocfpy_crypto_operations_total", (("driver", "openssl"),)): 1234,
        ("ocfpy_crypto_operations_total", (("driver", "af_alg"),)): 56,
        ("ocfpy_crypto_failovers_total", (("driver", "af_alg"),)): 1,
    }
    assert got == expected
    types = {fam.name.removesuffix("_total"): fam.type
             for fam in text_string_to_metric_families(text)}
    assert types["ocfpy_ike_sas"] == types["ocfpy_child_sas"] == "gauge"
    assert {types[n] for n in types if n not in ("ocfpy_ike_sas", "ocfpy_child_sas")} == {
        "counter"}


def test_each_scrape_reads_a_fresh_snapshot():
    n = iter(range(1, 10))

    def snapshot() -> MetricsSnapshot:
        return MetricsSnapshot(ike_sas={"ESTABLISHED": next(n)})

    (_, _, a), (_, _, b) = asyncio.run(_scrape(snapshot, "/metrics", "/"))
    key = ("ocfpy_ike_sas", (("state", "ESTABLISHED"),))
    assert (_samples(a)[key], _samples(b)[key]) == (1, 2)


def test_an_empty_snapshot_is_valid_exposition():
    ((code, _, text),) = asyncio.run(_scrape(MetricsSnapshot, "/metrics"))
    assert code == 200
    assert _samples(text) == {("ocfpy_dpd_failures_total", ()): 0}


def test_unknown_path_and_failing_snapshot(caplog):
    def broken() -> MetricsSnapshot:
        raise RuntimeError("engine table gone")

    (nf, _, _), (err, _, body) = asyncio.run(_scrape(broken, "/nope", "/metrics"))
    assert nf == 404
    assert err == 500 and "snapshot failed" in body
    assert "engine table gone" in caplog.text


def test_a_taken_port_is_a_clear_error():
    async def run():
        first = await MetricsServer(MetricsSnapshot, "127.0.0.1", 0).start()
        try:
            with pytest.raises(MetricsError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                await MetricsServer(MetricsSnapshot, "127.0.0.1", first.port).start()
        finally:
            await first.close()

    asyncio.run(run())


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    with pytest.raises(MetricsError, match=r"pip install 'ocfpy\[metrics\]'"):
        MetricsServer(MetricsSnapshot)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9641", ("127.0.0.1", 9641)),
    ("[::1]:9641", ("::1", 9641)),
    ("9641", ("127.0.0.1", 9641)),
    (" 0.0.0.0:80 ", ("0.0.0.0", 80)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("localhost:9641", "not an IP address"),
    ("127.0.0.1", "not ADDRESS:PORT"),
    ("::1:9641", "not ADDRESS:PORT"),
    ("[::1]9641", "write an IPv6 address as"),
    ("127.0.0.1:70000", "not a port"),
    ("127.0.0.1:x", "not a port"),
])
def test_parse_listen_refuses(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_listen(text)


def test_config_key_reports_file_line_key():
    from ocfpy.iked.configfile import ConfigError, Table, _Loader

    schema = Table({"daemon": Table({"metrics": listen_converter})})

    def check(text):
        return _Loader(text, "iked.toml").table(schema, tomllib.loads(text), ())

    assert check('[daemon]\nmetrics = "127.0.0.1:9641"\n') == {
        "daemon": {"metrics": ("127.0.0.1", 9641)}}
    with pytest.raises(ConfigError, match=r"iked.toml:3: daemon.metrics: 'metrics.example' is "
                                          "not an IP address"):
        check('[daemon]\n\nmetrics = "metrics.example:9641"\n')
