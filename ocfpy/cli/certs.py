"""`ocfpy certs list`: the certificates beside a daemon's configuration (swanctl's layout:
x509/, x509ca/, x509crl/, private/), like `swanctl --list-certs`: subject, issuer, validity,
SANs, key type, and where each private key lives (a file in private/ or a PKCS#11 token)."""

from __future__ import annotations

import argparse
import datetime as dt

from ocfpy.cli.common import console, print_json


def _err():
    from rich.console import Console

    return Console(stderr=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certs", help="list the certificates and keys an iked configuration uses",
        description="Read the credentials beside the configuration file (x509/, x509ca/, "
        "x509crl/, private/, and [secrets.token-*] keys) with the same checks the daemon makes "
        "at start, and list them.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="one row per certificate (swanctl --list-certs)")
    ls.add_argument("--config", "-c", required=True, metavar="FILE",
                    help="the daemon's TOML config file (credentials are found beside it)")
    ls.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ls.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.iked import credentials as creds
    from ocfpy.iked.configfile import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        _err().print(f"[red]{exc}[/red]")
        return 1
    # tokens are checked by signing in them: only then is a dispatcher (and its drivers) needed
    from ocfpy.iked.configfile import use_pkcs11_module

    use_pkcs11_module(config)  # [daemon] pkcs11_module, as the daemon's drivers see it
    dispatcher = Dispatcher() if config.tokens else None
    try:
        loaded = creds.load_credentials(
            config.base_dir or ".", now=dt.datetime.now(dt.UTC),
            private_secrets={k.name: creds.PrivateSecret(k.file, k.secret)  # type: ignore[arg-type]
                             for k in config.private_keys},
            token_secrets={t.name: creds.TokenSecret(t.handle, t.pin) for t in config.tokens},
            dispatcher=dispatcher)
    except creds.CredentialError as exc:
        for problem in exc.problems:
            _err().print(f"[red]{problem}[/red]")
        return 1
    rows = loaded.rows()
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    table = Table(title=f"certificates beside {args.config}", show_lines=True)
    for col in ("file", "subject", "issuer", "valid", "SANs", "key", "private key"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["file"], r["subject"], r["issuer"],
                      f"{r['not_before'][:19]}\n{r['not_after'][:19]}",
                      "\n".join(r["sans"]), r["key"] + (" (CA)" if r["ca"] else ""),
                      r["private_key"] or "-")
    console().print(table)
    for w in loaded.warnings:
        _err().print(f"[yellow]warning: {w}[/yellow]")
    return 0
