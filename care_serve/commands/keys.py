"""``care-serve keys add|list|revoke``: the API key file of a server.

``add`` prints the new key once (only its hash is stored); a running server
re-reads the file within a second of a change.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from care_serve.security.keys import SCOPES, KeyFile

_ENV = "CARE_SERVE_API_KEYS_FILE"


def _key_file_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(_ENV)
    parser.add_argument(
        "--api-keys",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        metavar="FILE",
        help=f"the API key file the server reads (--api-keys of serve) [env {_ENV}]",
    )


def register(subparsers: Any) -> None:
    """Add the ``keys`` subcommand and its actions."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="add, list and revoke API keys (scopes infer and admin)",
        description="Manage the API key file of a server (serve --api-keys FILE). Keys are "
        "stored as SHA-256 hashes; 'add' prints the key once.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a key and print it (once)")
    add.add_argument("name", help="who the key is for (shown in logs and metrics)")
    add.add_argument(
        "--scope",
        choices=SCOPES,
        default="infer",
        help="infer: inference, metadata, listing; admin: also load/unload (default: infer)",
    )
    add.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="R",
        help="requests per second this key may make (default: the server's rate_limit)",
    )
    _key_file_option(add)
    listing = actions.add_parser("list", help="list the keys (names, scopes, rates; no keys)")
    _key_file_option(listing)
    revoke = actions.add_parser("revoke", help="remove a key (refused from the next request)")
    revoke.add_argument("name")
    _key_file_option(revoke)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.api_keys
    if args.action == "list":
        keys = KeyFile.read(path)
        if not keys.keys:
            print(f"no keys in {path}")
        for entry in keys.keys:
            rate = f"{entry.rate:g}/s" if entry.rate else "default"
            print(f"{entry.name}\tscope={entry.scope}\trate={rate}\tcreated={entry.created}")
        return 0
    keys = KeyFile.read(path, missing_ok=args.action == "add")
    if args.action == "add":
        if args.rate is not None and not args.rate > 0:
            raise ValueError(f"--rate must be a positive number (requests/s), got {args.rate}")
        key = keys.add(args.name, args.scope, args.rate)
        keys.write(path)
        print(key)
        print(
            f"added {args.name!r} (scope {args.scope}) to {path}; the key above is shown only "
            "now: send it as 'Authorization: Bearer <key>'",
            file=sys.stderr,
        )
        return 0
    keys.revoke(args.name)
    keys.write(path)
    print(f"revoked {args.name!r} in {path}")
    return 0
