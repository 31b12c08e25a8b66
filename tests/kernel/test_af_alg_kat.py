"""The project's shared KAT runner (tests/kat/test_kat_vectors.py), collected here so that it
runs for af_alg inside the VM lane's single pytest session (one guest start-up instead of
two; the guest is slow). The runner picks its drivers from OCFPY_KAT_DRIVERS, which the lane
sets to ``af_alg``; without it the runner covers every active driver."""

from tests.kat.test_kat_vectors import test_known_answers  # noqa: F401  (collected here)
