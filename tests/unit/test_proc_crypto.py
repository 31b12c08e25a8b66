"""ocfpy.crypto.devices.proc_crypto on a /proc/crypto recorded in the VM lane guest (Debian 6.1.0-56,
QEMU TCG with a virtio-crypto device; tests/unit/data/proc_crypto_debian6.1_vm.txt, copied
unchanged from results/vm/proc-crypto.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocfpy.crypto.devices import proc_crypto

DUMP = Path(__file__).parent / "data" / "proc_crypto_debian6.1_vm.txt"


@pytest.fixture(scope="module")
def algs() -> list[proc_crypto.CryptoAlg]:
    return proc_crypto.parse(DUMP.read_text())


def test_every_block_is_parsed(algs):
    assert len(algs) == DUMP.read_text().count("\nname ") + DUMP.read_text().startswith("name ")
    for a in algs:
        assert a.name and a.driver and a.type


def test_name_resolves_to_highest_priority_usable_entry(algs):
    # sha256 has three implementations (avx2 170, avx 160, ssse3 150) plus generic
    best = proc_crypto.resolve("sha256", "hash", algs)
    assert best is not None and best.driver == "sha256-avx2" and best.priority == 170
    assert best.describe() == "sha256-avx2 (priority 170)"


def test_internal_entries_are_never_chosen_by_name(algs):
    # cryptd(__generic-gcm-aesni) has priority 450 > 400 but is internal
    internal = [a for a in algs if a.name == "__gcm(aes)"]
    assert internal and all(a.internal for a in internal)
    best = proc_crypto.resolve("gcm(aes)", "aead", algs)
    assert best is not None and best.driver == "generic-gcm-aesni" and not best.internal


def test_driver_name_matches_exactly_and_type_filters(algs):
    e = proc_crypto.by_driver("generic-gcm-aesni", algs)
    assert e is not None and e.name == "gcm(aes)" and proc_crypto.afalg_type_of(e) == "aead"
    assert proc_crypto.resolve("generic-gcm-aesni", "aead", algs) == e
    assert proc_crypto.resolve("generic-gcm-aesni", "hash", algs) is None
    assert proc_crypto.resolve("no-such-alg", None, algs) is None


def test_unknown_fields_are_kept_and_junk_is_ignored():
    text = "name : x\ndriver : x-generic\npriority : nan\nnew field : 7\n\ngarbage line\n"
    [a] = proc_crypto.parse(text)
    assert a.priority == 0 and a.fields["new field"] == "7" and a.usable


def test_virtio_crypto_entry_is_found_by_driver_but_loses_by_priority(algs):
    v = proc_crypto.by_driver("virtio_crypto_aes_cbc", algs)
    assert v is not None and v.name == "cbc(aes)" and v.priority == 150
    assert v.module == "virtio_crypto" and proc_crypto.afalg_type_of(v) == "skcipher"
    # a plain cbc(aes) bind gets aesni (priority 400): accelerators must bind by driver name
    assert proc_crypto.resolve("cbc(aes)", "skcipher", algs).driver == "cbc-aes-aesni"
