"""``care-serve pull``: the authors' ImageNet checkpoints by name, from the Hugging Face Hub.

The file is fetched with ``huggingface_hub.hf_hub_download`` (progress bar, a
lost connection resumed with a Range request, kept in the Hugging Face cache;
``--offline`` / ``HF_HUB_OFFLINE=1`` uses only that cache) and then imported
exactly as ``care-serve import`` does: strict loading (a file of another
architecture is refused with the loader's key-level message), fused ONNX with
the parity check, ImageNet labels, and a model card with the file's sha256,
the hub repo, file and the commit it was downloaded at (``model_card.hub``),
and the paper's accuracy. ``--sha256`` checks the downloaded file before
anything is imported. ``HF_ENDPOINT`` points the download at another hub (the
tests use a fake one).

A hub that cannot be reached fails in seconds, not after huggingface_hub's
minute of retries: one HEAD with a short connect timeout comes first, and when
it gets no answer the file is taken from the cache if it was pulled before, or
the command stops with one line naming the file's URL and the ``care-serve
import`` command for a copy downloaded elsewhere.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from care_serve.commands.sizes import add_input_size_option

HUB_REPO = "YuanZ1995/CARE-Transformer"
PAPER = (
    "Zhou et al., CARE Transformer: Mobile-Friendly Linear Visual Transformer via Decoupled "
    "Dual Interaction, CVPR 2025, arXiv:2411.16170"
)
OFFICIAL_LICENSE = "MIT"  # the licence the authors publish their code and weights under
# Seconds to wait for a connection to the hub before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class OfficialWeights:
    """One released ImageNet-1k checkpoint and the paper's figures for it."""

    filename: str  # file name inside HUB_REPO (override with --filename)
    top1: float  # ImageNet-1k top-1 accuracy (%) reported in the paper
    gmacs: float  # GMACs at 224x224 reported in the paper


# The one table of official weights: variant -> file in the hub repo and the paper's numbers.
# The file names follow the authors' release (CARETrans_S0.pth.tar, ...); they were not
# checked against the hub (no internet where this was written): use --filename if they differ.
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {
    "care_s0": OfficialWeights("CARETrans_S0.pth.tar", top1=78.4, gmacs=0.7),
    "care_s1": OfficialWeights("CARETrans_S1.pth.tar", top1=80.1, gmacs=1.0),
    "care_s2": OfficialWeights("CARETrans_S2.pth.tar", top1=82.1, gmacs=1.9),
}


def register(subparsers: Any) -> None:
    """Add the ``pull`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pull",
        help="download an official ImageNet checkpoint from the Hugging Face Hub and import it",
        description=f"Download the authors' ImageNet-1k checkpoint of VARIANT from the Hugging "
        f"Face Hub ({HUB_REPO}) into the Hugging Face cache and import it into the model store "
        "as `care-serve import` does (strict loading, fused ONNX, ImageNet labels, a model "
        "card with the sha256 and the paper's accuracy).",
    )
    parser.add_argument("variant", metavar="VARIANT", help=", ".join(OFFICIAL_WEIGHTS))
    parser.add_argument(
        "--revision",
        default=None,
        help="hub branch, tag or commit (default main); the package records the commit",
    )
    parser.add_argument(
        "--sha256",
        type=sha256_argument,
        default=None,
        metavar="HEX",
        help="expected sha256 of the checkpoint: a downloaded file with another digest is "
        "refused before anything is written",
    )
    parser.add_argument("--filename", default=None, help="file in the hub repo (default: table)")
    parser.add_argument(
        "--model-store",
        default="model_store",
        help="model store (default model_store)",
    )
    parser.add_argument("--name", default=None, help="model name (default: care-s0, ...)")
    parser.add_argument("--version", type=int, default=1, help="package version (default 1)")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use only the Hugging Face cache, never the network (as HF_HUB_OFFLINE=1)",
    )
    parser.add_argument("--format", choices=("onnx", "pytorch"), default="onnx")
    add_input_size_option(parser, "224", "network input of the package")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    parser.set_defaults(handler=run)


def sha256_argument(text: str) -> str:
    """``--sha256``: 64 hex digits, returned lowercase."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a sha256 (64 hex digits), got {text!r}")
    return text.strip().lower()


def official_weights(variant: str) -> OfficialWeights:
    """The table row of ``variant``; ``ValueError`` naming the known variants otherwise."""
    try:
        return OFFICIAL_WEIGHTS[variant]
    except KeyError:
        raise ValueError(
            f"no official weights for {variant!r}; pull knows {', '.join(OFFICIAL_WEIGHTS)} "
            "(other checkpoints: care-serve import FILE --arch ...)"
        ) from None


class HubUnreachable(ValueError):
    """The hub gave no answer at all (no connection, DNS, proxy, TLS or a timeout)."""


def probe_timeout() -> Any:
    """The probe's timeout: connect within ``CONNECT_TIMEOUT_S``, answer within the etag timeout.

    huggingface_hub's client is httpx2 here (``timeout=None`` on the client); with another
    http backend a plain number bounds every phase.
    """
    from huggingface_hub import constants

    answer = float(constants.HF_HUB_ETAG_TIMEOUT)
    connect = min(CONNECT_TIMEOUT_S, answer)
    try:
        import httpx2
    except ImportError:  # pragma: no cover - an older huggingface_hub
        return connect
    return httpx2.Timeout(answer, connect=connect)


def probe_hub(url: str) -> None:
    """One HEAD on ``url``, no retries; ``HubUnreachable`` when no answer comes back.

    Any HTTP answer (a 404 too) means the hub is there: ``hf_hub_download`` then asks again
    and reports what it says. Without this, ``hf_hub_download`` retries an unanswered HEAD
    with backoff (1 + 2 + 4 + 8 + 8 s, a warning line each) before giving up.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(url, timeout=probe_timeout())
    except HfHubHTTPError:
        return
    except Exception as exc:  # the http backend's transport errors: no answer from the hub
        raise HubUnreachable(str(exc) or type(exc).__name__) from exc


def import_hint(args: argparse.Namespace) -> str:
    """The ``care-serve import`` command that packages a copy downloaded elsewhere as pull would."""
    words = ["care-serve import FILE", f"--arch {args.variant}", f"--name {package_name(args)}"]
    if args.version != 1:
        words.append(f"--version {args.version}")
    if args.model_store != "model_store":
        words.append(f"--model-store {args.model_store}")
    if args.format != "onnx":
        words.append(f"--format {args.format}")
    if args.input_size is not None and tuple(args.input_size) != (224, 224):
        words.append("--input-size {}x{}".format(*args.input_size))
    return " ".join(words)


def package_name(args: argparse.Namespace) -> str:
    """``--name``, or the variant with dashes (care_s0 -> care-s0)."""
    return str(args.name or args.variant.replace("_", "-"))


def download(filename: str, revision: str | None, offline: bool, hint: str = "") -> Path:
    """``filename`` of ``HUB_REPO`` in the local cache (downloaded unless offline).

    ``hint`` is the ``care-serve import`` command quoted when the hub cannot be reached.
    """
    from huggingface_hub import constants, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    where = f"{HUB_REPO}/{filename} at revision {revision or 'main'}"
    if not offline:
        url = hf_hub_url(HUB_REPO, filename, revision=revision)
        try:
            probe_hub(url)
        except HubUnreachable as exc:
            try:  # pulled before: the cache has it, as hf_hub_download would find it
                cached = Path(
                    hf_hub_download(HUB_REPO, filename, revision=revision, local_files_only=True)
                )
            except LocalEntryNotFoundError:
                raise HubUnreachable(
                    f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({exc}) and "
                    f"{where} is not in the Hugging Face cache; download {url} on a machine "
                    f"that can and import the file with: {hint or 'care-serve import FILE'}"
                ) from exc
            print(
                f"the Hugging Face Hub at {constants.ENDPOINT} cannot be reached ({exc}); "
                f"using the cached {where}",
                file=sys.stderr,
                flush=True,
            )
            return cached
    try:
        return Path(
            hf_hub_download(HUB_REPO, filename, revision=revision, local_files_only=offline)
        )
    except LocalEntryNotFoundError as exc:
        if offline:
            raise ValueError(
                f"{where} is not in the Hugging Face cache and --offline / HF_HUB_OFFLINE=1 "
                "forbids downloading it; pull once with network access (same --revision)"
            ) from exc
        raise ValueError(f"cannot reach the hub for {where}: {exc}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise ValueError(
                f"the hub has no {where} (HTTP 404); check --revision, or name the file "
                "with --filename"
            ) from exc
        raise ValueError(f"downloading {where} failed: {exc}") from exc


def cached_commit(path: Path, filename: str) -> str:
    """The hub commit of a file in the Hugging Face cache (``snapshots/<commit>/<filename>``)."""
    depth = len(PurePosixPath(filename).parts)
    commit = path.parents[depth - 1].name if len(path.parents) >= depth else ""
    if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", commit):
        raise ValueError(
            f"cannot tell which hub commit {path} was downloaded at (the Hugging Face cache "
            "keeps files under snapshots/<commit>/)"
        )
    return commit


def check_sha256(path: Path, expected: str, where: str) -> str:
    """The sha256 of ``path``; ``ValueError`` naming both digests when it is not ``expected``."""
    from care_serve.store.integrity import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(
            f"{where} has sha256 {actual}, not the expected {expected} (--sha256); nothing was "
            "imported. Check the digest, or pin the revision it belongs to with --revision"
        )
    return actual


def run(args: argparse.Namespace) -> int:
    """Download (or take from the cache) and import; prints where the package went."""
    from huggingface_hub import hf_hub_url

    from care_serve.commands.import_model import print_result, progress_printer
    from care_serve.offline.importer import ImportOptions, import_checkpoint
    from care_serve.store.manifest import HubSource

    weights = official_weights(args.variant)
    filename = args.filename or weights.filename
    path = download(filename, args.revision, args.offline, import_hint(args))
    commit = cached_commit(path, filename)
    print(f"checkpoint {path} (hub commit {commit})", flush=True)
    if args.sha256 is not None:
        check_sha256(path, args.sha256, f"the downloaded {HUB_REPO}/{filename} at {commit}")
        print(f"sha256 {args.sha256} as expected", flush=True)
    options = ImportOptions(
        checkpoint=path,
        arch=args.variant,
        name=package_name(args),
        version=args.version,
        model_store=Path(args.model_store),
        labels="imagenet",
        format=args.format,
        input_size=args.input_size,
        description=f"{args.variant} ImageNet-1k classifier, the authors' official checkpoint "
        f"({PAPER}).",
        license=OFFICIAL_LICENSE,
        overwrite=args.overwrite,
        source=hf_hub_url(HUB_REPO, filename, revision=commit),
        hub=HubSource(
            repo=HUB_REPO, filename=filename, revision=commit, requested=args.revision or "main"
        ),
        metrics={"imagenet_top1_paper": weights.top1, "gmacs_paper": weights.gmacs},
        card_notes={
            "paper": PAPER,
            "paper_imagenet_top1_percent": weights.top1,
            "paper_gmacs": weights.gmacs,
        },
    )
    print_result(import_checkpoint(options, progress=progress_printer()), options)
    return 0
