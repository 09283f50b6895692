"""``care-serve sign``: Ed25519 keys, file digests and signatures of model packages.

``--generate-key PATH`` writes a new key pair; ``sign PACKAGE_DIR --key KEY``
writes ``PACKAGE_DIR/manifest.sig`` over the exact bytes of ``manifest.json``
after checking the package's files against their sha256; ``--add-digests``
first records those digests in a package written before they existed. The work
is in ``care_serve.store.signing`` and ``care_serve.store.package.add_digests``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``sign`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sign",
        help="sign a model package (Ed25519), record its file digests, or make a key pair",
        description="Sign PACKAGE_DIR: write PACKAGE_DIR/manifest.sig, the Ed25519 signature "
        "of the exact bytes of its manifest.json, which lists the sha256 of every other file "
        "of the package. A server with package_public_key set refuses a package whose "
        "signature does not verify (and, with require_signed_packages, one without). "
        "--generate-key PATH writes a new private key at PATH (mode 0600) and its public key "
        "at PATH.pub.",
    )
    parser.add_argument(
        "package", metavar="PACKAGE_DIR", nargs="?", help="package directory <store>/<name>/<N>"
    )
    parser.add_argument(
        "--key", metavar="PRIVATE_KEY_PEM", default=None, help="PEM Ed25519 private key to sign"
    )
    parser.add_argument(
        "--add-digests",
        action="store_true",
        help="first record the sha256 of the package's files in manifest.json (packages "
        "written before care-serve recorded them); alone, without --key, only that",
    )
    parser.add_argument(
        "--generate-key",
        metavar="PATH",
        default=None,
        help="write a new private key at PATH (0600) and its public key at PATH.pub; never "
        "overwrites",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Make a key pair, or record digests and/or sign one package."""
    if args.generate_key is not None:
        if args.package or args.key or args.add_digests:
            raise ValueError("--generate-key PATH makes a key pair and takes no other arguments")
        return _generate(Path(args.generate_key))
    if not args.package:
        raise ValueError(
            "give PACKAGE_DIR and --key PRIVATE_KEY_PEM (or --add-digests), or --generate-key PATH"
        )
    if args.key is None and not args.add_digests:
        raise ValueError(
            f"nothing to do for {args.package}: sign it with --key PRIVATE_KEY_PEM, or record "
            "its file digests with --add-digests"
        )
    package = Path(args.package)
    if not package.is_dir():
        raise ValueError(f"{package} is not a package directory (<store>/<name>/<version>)")
    try:
        if args.add_digests:
            _add_digests(package)
        if args.key is not None:
            _sign(package, Path(args.key))
    except OSError as exc:
        raise ValueError(f"{exc.filename or package}: {exc.strerror or exc}") from None
    return 0


def _generate(path: Path) -> int:
    from care_serve.store.signing import generate_key

    private, public, key = generate_key(path)
    print(f"wrote the private key {private} (mode 0600) and the public key {public}; key {key}")
    print(
        "Sign packages with the private key and keep it off the servers; give the servers "
        f"the public key: CARE_SERVE_PACKAGE_PUBLIC_KEY={public}"
    )
    return 0


def _add_digests(package: Path) -> None:
    from care_serve.store.manifest import SIGNATURE_FILE
    from care_serve.store.package import add_digests

    signed = (package / SIGNATURE_FILE).exists()
    files = add_digests(package)
    if files is None:
        print(f"{package}: manifest.json already lists the sha256 of its files; they match")
        return
    print(f"{package}: recorded the sha256 of {', '.join(files)} in manifest.json")
    if signed:
        print(f"{package}: removed {SIGNATURE_FILE}, which signed the old manifest; sign again")


def _sign(package: Path, key_path: Path) -> None:
    from care_serve.store.integrity import verify_files
    from care_serve.store.package import read_manifest
    from care_serve.store.signing import key_id, load_private_key, sign_package
    from care_serve.store.trust import TrustPolicy, verify_package

    key = load_private_key(key_path)
    manifest = read_manifest(package)
    where = f"{manifest.name}/{manifest.version}"
    if manifest.files is None:
        raise ValueError(
            f"{package}: manifest.json lists no sha256 of the package's files, so a signature "
            "would vouch for no weights; add them in the same run with --add-digests"
        )
    verify_files(package, manifest, where)  # never sign files that changed
    path = sign_package(package, key)
    verify_package(package, manifest, TrustPolicy(key.public_key(), require_signed=True), where)
    print(
        f"signed {where}: {path} (Ed25519, key {key_id(key)}); servers with the matching "
        "public key as package_public_key load it"
    )
