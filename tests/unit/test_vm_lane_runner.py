"""tests/vm/run.py on the host, without booting anything: prerequisites and the guest script."""

from __future__ import annotations

from pathlib import Path

from tests.vm import run


def test_missing_vng_skips_with_77_and_a_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OCFPY_VNG", str(tmp_path / "no-such-vng"))
    rc = run.main(["--results", str(tmp_path / "r"), "-k", "anything"])
    assert rc == run.SKIP == 77
    err = capsys.readouterr().err
    assert "SKIPPED" in err and "vng" in err
    assert not (tmp_path / "r" / "junit.xml").exists()


def test_guest_script_runs_kernel_marked_tests_with_the_project_venv():
    python = Path("/repo/.venv/bin/python")
    line = run.guest_command(python, "/res", ["-x"], kat=False, bench=True)
    assert "OCFPY_VM_LANE=1" in line and "OCFPY_KAT_DRIVERS=" in line
    assert "-m 'kernel or virtio'" in line and "--junitxml=/res/junit.xml" in line
    assert str(python) in line and " -x " in line + " "
    assert "afalg_bench.py" in line and "tests/kat" not in line
    assert line.rstrip().endswith("exit $rc")


def test_in_vm_lane_needs_both_the_cmdline_and_the_environment(monkeypatch):
    from tests.vm import guest

    monkeypatch.setenv("OCFPY_VM_LANE", "1")
    cmdline = Path("/proc/cmdline").read_text()
    assert guest.in_vm_lane() == ("virtme" in cmdline)
    monkeypatch.delenv("OCFPY_VM_LANE")
    assert guest.in_vm_lane() is False


def test_post_mortem_shows_pytest_progress_and_the_kernel_oops(tmp_path, capsys):
    console, log = tmp_path / "console.log", tmp_path / "pytest.log"
    noise = [f"\x1b[1m[ {i}.0] virtio_net: link up\x1b[0m" for i in range(60)]
    console.write_text("\n".join([*noise[:30], "[ 163.0] BUG: kernel NULL pointer dereference",
                                  "[ 163.1] RIP: 0010:virtcrypto_remove+0x40", *noise[30:]]))
    log.write_text("tests/kernel/test_xfrm.py ....\n")
    run._show_post_mortem(console, log)
    out = capsys.readouterr().out
    assert "BUG: kernel NULL pointer dereference" in out and "RIP: 0010:virtcrypto_remove" in out
    assert "tests/kernel/test_xfrm.py ...." in out
    assert "\x1b[" not in out


def test_a_kernel_death_after_the_tests_keeps_their_result(tmp_path, capsys):
    """vng exits 255 when the guest dies without handing back the script's exit code: that is
    a failure, unless every test had already finished and the guest wrote its exit code."""
    import subprocess
    import time

    rc_file = tmp_path / run.GUEST_RC

    def vng_dies() -> int:
        proc = subprocess.Popen(["sh", "-c", f"exit {run.VNG_UNEXPECTED_EXIT}"])
        return run._wait_for_guest(proc, rc_file, time.monotonic() + 30)

    assert vng_dies() == 255  # the guest died before it said how the tests ended
    rc_file.write_text("0\n")
    assert vng_dies() == 0
    assert "died after the tests finished" in capsys.readouterr().err
    rc_file.write_text("1\n")
    assert vng_dies() == 1  # failed tests stay failed
