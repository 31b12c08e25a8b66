"""`ocfpy iked`: run the IKEv2 daemon.

Start-up refuses, with a one-line reason on stderr and exit status 1, anything it cannot honour:
a bad config file (file:line: key: reason), a crypto backend that is unavailable (which one, why,
and which drivers are), a dataplane that cannot run, a port in use, a control socket taken.
Without --foreground the daemon detaches only once it is listening, so those errors still reach
the terminal that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

log = logging.getLogger("ocfpy.iked")

EX_CONFIG = 78  # sysexits.h: configuration error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "iked", help="run the IKEv2 daemon",
        description="The IKEv2 daemon: negotiates IKE and CHILD SAs (PSK) from a TOML config "
        "(docs/configuration.md) and installs them in an ESP dataplane. Control it with "
        "`ocfpy sa`.")
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the TOML config file")
    p.add_argument("--crypto-backend", metavar="NAME",
                   help="force every crypto session onto one driver: auto (none forced), "
                   "openssl, af_alg or a driver name (overrides daemon.crypto_backend)")
    p.add_argument("--no-strict-backend", action="store_true",
                   help="let sessions the forced backend cannot serve fall back to another driver")
    p.add_argument("--calibration", metavar="PATH",
                   help="rank drivers of one kind by this `ocfpy bench crypto --save` file "
                   "('default': the file --save writes by default; overrides "
                   "daemon.calibration)")
    p.add_argument("--dataplane", choices=["auto", "userspace", "xfrm", "none"],
                   help="ESP dataplane (overrides daemon.dataplane); none = IKE only, explicit")
    p.add_argument("--control", metavar="PATH", help="control socket (overrides daemon.control_socket)")
    p.add_argument("--foreground", "-F", action="store_true", help="do not detach")
    p.add_argument("--log-file", metavar="FILE", help="log here (overrides [daemon.log]; "
                   "default: stderr in the foreground, syslog once detached)")
    p.add_argument("--check", action="store_true",
                   help="check the config file, its credentials (certificates, keys, CAs, CRLs, tokens) and "
                   "the backend as a start would, print a summary, and exit")
    p.set_defaults(func=run)


def _fail(message: str, code: int = 1) -> int:
    print(f"ocfpy iked: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace):
    """The config file with the command line's overrides applied (start and every reload)."""
    from ocfpy.iked.configfile import load

    config = load(args.config)
    opts = config.daemon
    if args.crypto_backend:
        opts.crypto_backend = args.crypto_backend
    if args.no_strict_backend:
        opts.strict_backend = False
    if args.dataplane:
        opts.dataplane = args.dataplane
    if args.control:
        opts.control_socket = args.control
    return config


def run(args: argparse.Namespace) -> int:
    from ocfpy.cli.common import build_dispatcher
    from ocfpy.crypto.errors import BackendUnavailable
    from ocfpy.iked import logsetup
    from ocfpy.iked.configfile import ConfigError

    try:
        config = _load(args)
    except ConfigError as exc:
        return _fail(str(exc), EX_CONFIG)
    opts = config.daemon
    calibration = getattr(opts, "calibration", None)  # the config file's, already checked
    if args.calibration:
        calibration = args.calibration
    if opts.crypto_backend == "calibrated" and not calibration:
        calibration = "default"  # what the calibrated policy reads when no file is named
    log_options = logsetup.LogOptions.from_table(getattr(opts, "log", None))
    foreground = bool(args.foreground)  # --check answers for the start it stands in for
    log_warning = None
    try:
        # Opened here, while stderr is still the terminal: "no /dev/log" or an unwritable
        # file is a start-up error, not a daemon that logs nowhere once detached.
        log_target = logsetup.check(log_options, foreground=foreground, log_file=args.log_file)
    except logsetup.LogSetupError as exc:
        implicit = log_options.target == "auto" and not log_options.file and not args.log_file
        if not (args.check and implicit):
            return _fail(str(exc))
        # --check without --foreground on a host without syslog: a detached start would be
        # refused, but the same file is fine under systemd (--foreground): say so, not fail
        log_target, log_warning = "syslog", f"a detached start would be refused: {exc}"
    if foreground and not args.check:  # a detached child configures its own after dup2
        logsetup.configure(log_options, foreground=True, verbosity=_verbosity(args),
                           log_file=args.log_file)

    from ocfpy.iked.configfile import use_pkcs11_module

    use_pkcs11_module(config)  # before the drivers load: the pkcs11 driver reads it once
    try:
        dispatcher = build_dispatcher(backend=opts.crypto_backend, strict=opts.strict_backend,
                                      calibration=calibration)
    except BackendUnavailable as exc:
        return _fail(f"crypto backend refused: {exc}")
    except ConfigError as exc:
        return _fail(f"--calibration: {exc}", EX_CONFIG)
    problems = _unservable(config, dispatcher)
    for p in problems:
        log.warning("%s", p)
    from ocfpy.iked.daemon import DaemonError, select_dataplane

    if args.check:
        _summary(config, dispatcher, problems, calibration)
        code = _check_credentials(config, dispatcher)
        if code:
            return code
        print(f"log: {log_target}" + (f" (warning: {log_warning})" if log_warning else ""))
        if getattr(opts, "metrics", None):
            from ocfpy.iked.metrics import MetricsError, _prometheus

            try:
                _prometheus()
            except MetricsError as exc:  # start would refuse: so does --check
                return _fail(str(exc))
        try:  # opened and closed as the start would open it: what it refuses, --check does
            probe = select_dataplane(opts.dataplane, dispatcher, config)
        except DaemonError as exc:
            return _fail(str(exc))
        print(f"dataplane {opts.dataplane}: {probe.name} opened and closed (it can run here)")
        probe.close()
        return 0

    try:
        dataplane = select_dataplane(opts.dataplane, dispatcher, config)
    except DaemonError as exc:
        return _fail(str(exc))
    reloader = _reloader(args, foreground)
    if args.foreground:
        return _serve(config, dispatcher, dataplane, ready_fd=None, reloader=reloader)
    return _detach(config, dispatcher, dataplane, args, log_options, reloader)


def _check_credentials(config, dispatcher) -> int:
    """Load certificates, keys, CAs, CRLs and tokens exactly as start does (open_cert_store,
    the daemon's own call) and report; EX_CONFIG with file:line: key: reason where start
    would refuse, 0 otherwise (signer problems are warnings there as at start)."""
    from datetime import UTC, datetime

    from ocfpy.iked.configfile import ConfigError, open_cert_store, use_pkcs11_module

    try:
        store, warnings = open_cert_store(config, now=datetime.now(UTC), dispatcher=dispatcher)
    except ConfigError as exc:
        return _fail(str(exc), EX_CONFIG)
    if store is None:
        print("credentials: none (no connection authenticates with a certificate)")
        return 0
    try:
        keys = ", ".join(f"{c.path.rsplit('/', 1)[-1]} ({c.where})" for c in store.local)
        print(f"credentials: {len(store.local)} certificate(s) with keys"
              + (f" [{keys}]" if keys else "") + f", {len(store.cas)} CA certificate(s), "
              f"{len(store.crls)} CRL(s)"
              + ("" if store.crls else " (revocation: not checked, no CRL in x509crl/)"))
        if any(c.where.startswith("pkcs11:") for c in store.local):
            print(f"pkcs11 module: {use_pkcs11_module(config) or 'the default paths'}")
        for w in warnings:
            print(f"warning: credentials: {w}")
    finally:
        store.close()  # sessions and token logins opened for the check
    return 0


def _verbosity(args: argparse.Namespace) -> int:
    return int(getattr(args, "verbose", 0) or 0)


def _reloader(args: argparse.Namespace, foreground: bool):
    """What the daemon calls on SIGHUP / `ocfpy sa reload`: the file again, with the same
    overrides; the log setup is checked and applied only once the whole file is accepted,
    so a refused file changes nothing (ConfigError / LogSetupError propagate)."""

    def reload():
        from ocfpy.iked import logsetup

        config = _load(args)
        options = logsetup.LogOptions.from_table(getattr(config.daemon, "log", None))
        logsetup.check(options, foreground=foreground, log_file=args.log_file)
        logsetup.configure(options, foreground=foreground, verbosity=_verbosity(args),
                           log_file=args.log_file)
        return config

    return reload


def _algorithms(config):
    """(key, transform) for every algorithm the config's proposals name, each once."""
    from ocfpy.crypto.catalogue import Primitive
    from ocfpy.crypto.catalogue import get as get_transform

    seen: set[str] = set()
    for conn in config.connections.values():
        texts = [("proposals", p) for p in conn.proposals]
        texts += [(f"children.{c.name}.esp_proposals", p) for c in conn.children.values()
                  for p in c.esp_proposals]
        for key, text in texts:
            for word in text.split("-"):
                t = get_transform(word)
                if t.primitive is Primitive.FLAG or t.keyword in seen:
                    continue
                seen.add(t.keyword)
                yield f"connections.{conn.name}.{key}", t


def _unservable(config, dispatcher) -> list[str]:
    """Algorithms named in the config that no driver may serve under the backend policy."""
    out = []
    for key, t in _algorithms(config):
        if not dispatcher.can_serve(t):
            who = [r.name for r in dispatcher.candidates(t)]
            out.append(f"{key}: {t.keyword} cannot be served by "
                       f"backend {config.daemon.crypto_backend!r}; drivers that can: "
                       f"{', '.join(who) or 'none'} (it will not be negotiated)")
    return out


def _summary(config, dispatcher, problems: list[str], calibration: str | None) -> None:
    from ocfpy.iked.configfile import calibration_path

    print(f"config OK: {len(config.connections)} connection(s), {len(config.secrets)} secret(s)")
    print(f"crypto backend: {config.daemon.crypto_backend} (active drivers: "
          + ", ".join(r.name for r in dispatcher.registry.active()) + ")")
    if calibration:
        print(f"calibration: {calibration_path(calibration)} "
              f"({dispatcher.calibration.source or 'no source named'})")
    else:
        print("calibration: none (drivers of one kind ranked by priority)")
    # Where the daemon's sessions open now, per algorithm: what a backend or a calibration
    # changes, shown before the daemon runs.
    served = [f"{t.keyword} {dispatcher.driver_for(t)}" for _, t in _algorithms(config)
              if dispatcher.can_serve(t)]
    print("sessions open on: " + (", ".join(served) or "-"))
    print(f"dataplane: {config.daemon.dataplane}; control socket: {config.daemon.control_socket}")
    for p in problems:
        print(f"warning: {p}")


def _watch_devices(dispatcher) -> None:
    """Accelerators that appear become drivers for new sessions; ones that vanish hand their
    sessions on (registry.remove -> the dispatcher migrates). Both are logged. Started here,
    in the serving process, because the monitor is a thread and would not survive the fork."""
    try:
        from ocfpy.crypto.devices.hotplug import attach

        attach(dispatcher.registry)
    except Exception as exc:  # no udev here (a container): the daemon runs without hot-plug
        log.info("device hot-plug not watched: %s", exc)


def _serve(config, dispatcher, dataplane, ready_fd: int | None, reloader=None) -> int:
    from ocfpy.ike.engine import IkeEngine
    from ocfpy.iked.control import ControlError
    from ocfpy.iked.daemon import DaemonError, IkeDaemon
    from ocfpy.iked.metrics import MetricsError
    from ocfpy.iked.systemd import Notifier, NotifyError

    try:
        notifier = Notifier.from_env()
    except NotifyError as exc:  # a NOTIFY_SOCKET we cannot use: say so, run without it
        log.warning("%s; not notifying systemd", exc)
        notifier = Notifier(None)

    async def main() -> int:
        engine = IkeEngine(config, dispatcher)
        daemon = IkeDaemon(config, engine, dataplane, dispatcher=dispatcher, notifier=notifier,
                           reloader=reloader)
        _watch_devices(dispatcher)

        readied = False

        def ready() -> None:
            nonlocal readied
            readied = True
            if ready_fd is not None:
                os.write(ready_fd, b"ok\n")
                os.close(ready_fd)
            log.info("ocfpy iked %d ready: backend %s, dataplane %s, control %s", os.getpid(),
                     config.daemon.crypto_backend, dataplane.name, daemon.control_path)

        try:
            return await daemon.run(ready)
        except (DaemonError, ControlError, MetricsError, OSError) as exc:
            if not readied:  # failed while starting: one line, no traceback
                dataplane.close()
                raise _StartFailed(str(exc)) from None
            raise

    from ocfpy.iked import memtrace

    if memtrace.install():  # a debug aid, off unless OCFPY_MEMTRACE names a directory
        log.warning("memory tracing on (%s): kill -USR2 a process to write a record",
                    os.environ[memtrace.ENV])
    try:
        return asyncio.run(main())
    except _StartFailed as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"{exc}\n".encode())
            os.close(ready_fd)
        return _fail(str(exc))


class _StartFailed(Exception):
    pass


def _detach(config, dispatcher, dataplane, args, log_options, reloader) -> int:
    """Classic double fork; the parent exits once the child says it listens (or why not)."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            answer = pipe.readline().strip()
        if answer == "ok":
            return 0
        return _fail(answer) if answer else _fail("the daemon died while starting (see its log)")
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    from ocfpy.iked import logsetup

    try:  # in this process: a syslog socket is per process, and stderr is /dev/null now
        logsetup.configure(log_options, foreground=False, verbosity=_verbosity(args),
                           log_file=args.log_file)
    except logsetup.LogSetupError as exc:  # checked before the fork; only a race gets here
        os.write(write_fd, f"{exc}\n".encode())
        os._exit(1)
    code = _serve(config, dispatcher, dataplane, ready_fd=write_fd, reloader=reloader)
    os._exit(code)

