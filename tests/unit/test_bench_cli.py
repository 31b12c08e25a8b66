"""`ocfpy bench ike` / `ocfpy bench esp` without root: options, clear refusals, the configs
the IKE benchmark gives its daemons, ratio and target arithmetic, profile summaries."""

from __future__ import annotations

import cProfile
import os
import select
import time

import pytest

from ocfpy.bench import esp as esp_bench
from ocfpy.bench import ike as ike_bench
from ocfpy.cli.main import build_parser, main
from ocfpy.iked.configfile import loads
from ocfpy.lab import charon as charon_mod
from ocfpy.lab.netlab import Namespace

MOON = Namespace("obn-moon", ifname="obn-moon0", outer="10.97.0.1", inner="10.98.1.1",
                 inner_net="10.98.1.0/24")
SUN = Namespace("obn-sun", ifname="obn-sun0", outer="10.97.0.2", inner="10.98.2.1",
                inner_net="10.98.2.0/24")


def parse(*argv: str):
    return build_parser().parse_args(["bench", *argv])


def test_ike_defaults_are_the_documented_ones():
    args = parse("ike")
    assert (args.n, args.sequential, args.memory) == (200, 50, 10000)
    assert not args.json and not args.no_strongswan and args.profile is None


def test_esp_defaults_are_the_documented_ones():
    args = parse("esp")
    assert (args.duration, args.rounds, args.esp_proposal, args.crypto_backend, args.mtu) == \
        (5.0, 3, "aes128gcm16", "openssl", 1400)
    assert not args.raw_esp and not args.no_strongswan and args.gso == 0


def _as_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


@pytest.mark.parametrize("what", ["ike", "esp"])
def test_refuses_without_root_saying_why(what, monkeypatch, capsys):
    _as_user(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["bench", what, "--json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"`ocfpy bench {what}` needs root" in err and "sudo" in err


def test_esp_refuses_without_iperf3_naming_the_setup_script(monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "iperf3"
                        else real(name, *a, **k))
    with pytest.raises(SystemExit):
        main(["bench", "esp"])
    err = capsys.readouterr().err
    assert "iperf3 is missing" in err and "bash scripts/setup.sh" in err


@pytest.mark.parametrize("what", ["ike", "esp"])
def test_refuses_without_charon_unless_told_to_skip_it(what, monkeypatch, capsys):
    flag = "--no-strongswan"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(charon_mod, "unavailable_reason",
                        lambda: "/usr/lib/ipsec/charon missing (apt-get install strongswan-charon)")
    with pytest.raises(SystemExit):
        main(["bench", what])
    err = capsys.readouterr().err
    assert "charon cannot run" in err and "bash scripts/setup.sh" in err and flag in err
    # with the flag, preflight no longer asks for charon
    from ocfpy.cli import bench_esp, bench_ike, bench_netns

    module = bench_ike if what == "ike" else bench_esp
    why = bench_netns.preflight(module.BENCH, parse(what, flag))
    assert why is None or "charon" not in why


def test_ike_rejects_a_zero_burst(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit):
        main(["bench", "ike", "--n", "0", "--no-strongswan"])
    assert "--n must be at least 1" in capsys.readouterr().err


def test_esp_rejects_an_absurd_mtu(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit):
        main(["bench", "esp", "--mtu", "100", "--no-strongswan"])
    assert "--mtu 100" in capsys.readouterr().err


# -- the daemons' configs: parsed by the daemon's own loader ----------------------------

def test_responder_config_loads_and_accepts_any_initiator_identity():
    cfg = loads(ike_bench.responder_config(SUN, MOON, "sun.obn.example"), "responder.toml")
    (conn,) = cfg.connections.values()
    assert conn.local.id == "sun.obn.example"
    assert not conn.remote.id  # any identity that knows the PSK
    assert conn.proposals == [ike_bench.IKE_PROPOSAL]
    assert cfg.daemon.cookie_threshold >= 1000000  # no cookie round trip in a rate test
    # The one PSK serves every initiator identity, as charon's %any responder does.
    from ocfpy.ike.credentials import Credentials

    assert Credentials(cfg.secrets).psk_for("sun.obn.example", "c7.moon.obn.example") == \
        ike_bench.PSK.encode()


def test_initiator_config_has_one_identity_per_connection():
    names = [f"c{i}" for i in range(5)]
    cfg = loads(ike_bench.initiator_config(MOON, SUN, "sun.obn.example", names, "obn"),
                "initiator.toml")
    assert sorted(cfg.connections) == sorted(names)
    ids = {c.local.id for c in cfg.connections.values()}
    assert len(ids) == 5  # distinct: no IKE_SA can be reused between initiations
    for c in cfg.connections.values():
        assert c.remote.id == "sun.obn.example"
        (child,) = c.children.values()
        assert child.esp_proposals == [ike_bench.ESP_PROPOSAL]


# -- arithmetic -------------------------------------------------------------------------

def _pair(ini, resp, rate, seq=5.0):
    return ike_bench.PairResult(ini, resp, 100, 100, 100 / rate, rate, seq)


def test_ike_ratios_and_targets():
    pairs = [_pair("ocfpy", "ocfpy", 210.0, 10.0), _pair("charon", "charon", 420.0, 5.0)]
    mem = [ike_bench.MemoryResult("ocfpy", 10000, 9.0, 0, 0, 1),
           ike_bench.MemoryResult("charon", 10000, 18.0, 0, 0, 1)]
    ratios, targets = ike_bench.compare(pairs, mem)
    assert ratios == {"rate_vs_charon": 0.5, "sequential_ms_vs_charon": 2.0,
                      "memory_per_sa_vs_charon": 0.5}
    assert targets == {"rate >= charon's": False, "memory per SA <= charon's": True}


def test_ike_without_charon_has_no_ratios():
    ratios, targets = ike_bench.compare([_pair("ocfpy", "ocfpy", 300.0)], [])
    assert ratios == {} and targets == {}


def test_esp_ratios_and_targets():
    ours = esp_bench.Figures([1100.0, 1200.0, 1140.0], [70000.0, 69000.0, 71000.0], [1.0])
    theirs = esp_bench.Figures([360.0, 400.0, 380.0], [35000.0, 36000.0, 34000.0], [2.0])
    ratios, targets = esp_bench.compare(ours, theirs)
    assert ratios["tcp_mbit_s"] == pytest.approx(1140 / 380, abs=1e-3)
    assert ratios["udp64_pps"] == pytest.approx(2.0, abs=1e-3)
    assert ratios["udp_mtu_pps"] == 0.5
    assert targets == {"TCP >= 3x libipsec": True, "64-byte rate >= 2x libipsec": True,
                       "MTU-sized rate >= 1.5x libipsec": False}
    ratios, targets = esp_bench.compare(esp_bench.Figures([1130.0], [60000.0], [3.0]), theirs)
    assert targets == {"TCP >= 3x libipsec": False, "64-byte rate >= 2x libipsec": False,
                       "MTU-sized rate >= 1.5x libipsec": True}


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_profile_summary_leaves_out_waiting_and_ranks_by_own_time(tmp_path):
    prof = cProfile.Profile()
    ep = select.epoll()

    def workload():
        ep.poll(0.2)  # waiting: must not appear
        _busy(300000)
        time.sleep(0)

    prof.runcall(workload)
    ep.close()
    path = tmp_path / "p.prof"
    prof.dump_stats(str(path))
    rows = ike_bench.profile_summary(path)
    names = [r["function"] for r in rows]
    assert not any("epoll" in n for n in names)
    assert any("_busy" in n or "genexpr" in n for n in names[:3])
    assert rows == sorted(rows, key=lambda r: -r["tottime_s"])
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=0.01)


def test_old_bench_scripts_map_onto_the_cli():
    import importlib.util
    from pathlib import Path

    def load(name):
        path = Path(__file__).parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    esp_argv = load("esp_bench").translate(["--seconds", "2", "--strongswan"])
    args = build_parser().parse_args(esp_argv)
    assert (args.duration, args.raw_esp, args.no_strongswan) == (2.0, True, False)
    ike_argv = load("ike_netns_bench").translate(["--concurrent", "30", "--memory", "0"])
    args = build_parser().parse_args(ike_argv)
    assert (args.n, args.memory, args.no_strongswan, args.json) == (30, 0, True, True)


# -- one name per meaning; old spellings still work, hidden, with a note ---------------------
@pytest.mark.parametrize("argv,old,new,dest,value", [
    (["bench", "esp"], "--seconds", "--duration", "duration", 2.0),
    (["bench", "esp"], "--runs", "--rounds", "rounds", 4),
    (["bench", "esp"], "--esp", "--esp-proposal", "esp_proposal", "aes256gcm16"),
    (["bench", "ike"], "--no-charon", "--no-strongswan", "no_strongswan", True),
    (["bench", "crypto"], "--backend", "--drivers", "drivers", ["openssl"]),
    (["bench", "overhead"], "--driver", "--crypto-backend", "crypto_backend", "af_alg"),
    (["devices"], "--seconds", "--stop-after", "stop_after", 0.5),
])
def test_an_old_option_spelling_means_the_new_one_and_says_so(argv, old, new, dest, value,
                                                              capsys):
    def given(flag):
        if value is True:
            return [flag]
        return [flag, ",".join(value) if isinstance(value, list) else str(value)]

    new_args = build_parser().parse_args([*argv, *given(new)])
    assert capsys.readouterr().err == ""
    old_args = build_parser().parse_args([*argv, *given(old)])
    assert getattr(old_args, dest) == getattr(new_args, dest) == value
    assert vars(old_args).keys() == vars(new_args).keys()
    assert capsys.readouterr().err == f"ocfpy: note: {old} is deprecated, use {new}\n"


def test_drivers_takes_a_comma_list_and_repeats():
    args = parse("crypto", "--drivers", "openssl,af_alg", "--drivers", "x")
    assert args.drivers == ["openssl", "af_alg", "x"]
    assert parse("crypto").drivers is None  # every active driver


def _options_by_command():
    """{option: {command path}} of every option `--help` shows, across all commands."""
    import argparse

    found: dict[str, set[str]] = {}

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())
            elif action.help != argparse.SUPPRESS and action.option_strings:
                for option in action.option_strings:
                    if option.startswith("--") and option != "--help":
                        found.setdefault(option, set()).add(path or "ocfpy")
    walk(build_parser(), "")
    # `ocfpy sa`'s actions share their options (--control, --json, --timeout): one entry "sa"
    actions = {path for paths in found.values() for path in paths if path.startswith("sa ")}
    for paths in found.values():
        if actions <= paths:
            paths -= actions
            paths.add("sa")
    return found


def test_docs_cli_md_lists_every_option_with_the_commands_that_take_it():
    # docs/cli.md is the one table of option names and their one meaning: an option added,
    # renamed or given to another command without the table saying so fails here.
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    text = text.split("## Every option", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`(--[a-z0-9-]+)[^`]*`[^|]*\|[^|]*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            table[m.group(1)] = {c.strip(" `") for c in m.group(2).split(",")}
    assert table == _options_by_command()
