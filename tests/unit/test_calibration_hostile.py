"""A corrupt or hostile calibration file where no config file checked it first (docs/security.md,
finding K1): `crypto_backend = "calibrated"` from the API or `ocfpy bench crypto --backend
calibrated`, which read the default file through Dispatcher. Before the fix, a file whose
"rates" was a list raised AttributeError out of Dispatcher(); NaN, infinite and negative
measurements were taken as rates. Every reader now refuses such a file with its path and the
reason, as the config file's check always did (the two share one parser)."""

from __future__ import annotations

import pytest

from ocfpy.crypto.calibration import Calibration, CalibrationError
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import BackendUnavailable

HOSTILE = [
    ("[]", 'expected an object with "rates"'),
    ('{"rates": []}', 'expected an object with "rates"'),
    ('{"rates": {"aes128gcm16": 5}}', "expected an object of driver -> measurements"),
    ('{"rates": {"aes128gcm16": {"openssl": {"a": 1}}}}', "non-empty list"),
    ('{"rates": {"aes128gcm16": {"openssl": [[1400, NaN]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes128gcm16": {"openssl": [[1400, Infinity]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes128gcm16": {"openssl": [[-1400, 5]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes128gcm16": {"openssl": [[1400, 5, 6]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes128gcm16": {"openssl": [[true, 5]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes129gcm16": {"openssl": [[1400, 5]]}}}', "unknown algorithm 'aes129gcm16'"),
    ('{"source": 5, "rates": {}}', '"source"'),
    ("\xff\xfe", "cannot read"),
    ("{", "not JSON"),
]


@pytest.mark.parametrize("content,reason", HOSTILE)
def test_the_default_calibration_is_refused_with_path_and_reason(tmp_path, monkeypatch,
                                                                 content, reason):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = tmp_path / "ocfpy" / "calibration.json"
    path.parent.mkdir()
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(BackendUnavailable) as exc:
        Dispatcher(backend="calibrated")
    assert str(path) in str(exc.value) and reason in str(exc.value)
    assert "ocfpy bench crypto --save" in str(exc.value)


@pytest.mark.parametrize("content,reason", HOSTILE)
def test_calibration_load_refuses_with_path_and_reason(tmp_path, content, reason):
    path = tmp_path / "cal.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(CalibrationError) as exc:
        Calibration.load(path)
    assert exc.value.path == str(path) and reason in exc.value.reason
    assert str(exc.value).startswith(f"{path}: ")


def test_a_good_calibration_still_loads(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text('{"source": "bench", "rates": {"aes128gcm16": {"openssl": [[64, 9], '
                    '[1400, 10.5]]}}}')
    cal = Calibration.load(path)
    assert cal.rate("aes128gcm16", "openssl", 1400) == 10.5 and cal.source == "bench"
