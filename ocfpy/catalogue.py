"""Old import path of ``ocfpy.crypto.catalogue`` (ocfpy 0.1), kept for drivers and programs written
against it; the alias is the same module object. Import from ``ocfpy.crypto`` instead."""

import sys
import warnings

from ocfpy.crypto import catalogue as _moved

warnings.warn("ocfpy.catalogue is now ocfpy.crypto.catalogue (or import from ocfpy.crypto); "
              "the old path goes away in ocfpy 0.3", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
