"""The soak's memory arithmetic (ocfpy/lab/soak.py): the growth per 1,000 rekeys is a
least-squares slope over the settled samples, and a recorded soak reads back the same."""

from __future__ import annotations

from ocfpy.lab.soak import SoakResult, fit_slope, main


def test_slope_is_fitted_over_the_settled_samples_per_rekey():
    assert fit_slope([(0, 1), (1, 2)]) is None
    slope, err = fit_slope([(0, 10), (1, 12), (2, 14), (3, 16)])
    assert slope == 2 and err == 0
    r = SoakResult(seconds=100, settle=20)
    r.rekey_times = [t + 0.5 for t in range(200)]  # one rekey a second
    # a warm-up jump before the settle time, then 5 kB per rekey
    r.memory_kb["a"] = [(0, 1000), (10, 9000)] + [(t, 9000 + 5 * t) for t in range(20, 101, 10)]
    slope, err = r.slope("a")
    assert round(slope) == 5000 and err < 1  # kB per 1,000 rekeys
    assert r.memory_growth_kb("a") == 5 * 80


def test_window_slopes_and_a_record_read_back(tmp_path, capsys):
    r = SoakResult(seconds=300, settle=60)
    r.rekey_times = [t + 0.5 for t in range(400)]
    # flat, with one allocator step of 1 MB at 150 s: windows across the step read it
    r.memory_kb["a"] = [(t, 50_000 + (1024 if t >= 150 else 0)) for t in range(0, 301, 10)]
    r.processes["a/daemon"] = [(t, kb, kb // 2, kb // 3) for t, kb in r.memory_kb["a"]]
    w = r.window_slopes("a", 100)
    assert len(w) == 15 and min(w) == 0 and max(w) > 5000
    slope, _ = r.slope("a")
    assert 0 < slope < max(w)  # the whole run's fit dilutes the step
    path = tmp_path / "soak.json"
    r.save(str(path))
    back = SoakResult.load(str(path))
    assert back.memory_kb == r.memory_kb and back.processes == r.processes
    assert back.slope("a/daemon", 3) == r.slope("a/daemon", 3)
    assert main([str(path), "--window", "100"]) == 0
    assert "a: 15 windows of 100 s" in capsys.readouterr().out
