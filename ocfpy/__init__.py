"""ocfpy: an OCF-style crypto framework (sessions, drivers, a dispatcher)."""

__version__ = "0.1.0"
