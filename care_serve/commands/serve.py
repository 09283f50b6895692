"""``care-serve serve``: start REST and gRPC on a model store.

Every option comes from a field of ``care_serve.settings.Settings``, so each one is
also the environment variable ``CARE_SERVE_<FIELD>``; an option given on the
command line wins over the environment.
"""

from __future__ import annotations

import argparse
import gc
import typing
from typing import Any

from care_serve.settings import Settings

FLAG_ALIASES = {"enable_grpc": "grpc", "enable_docs": "docs"}


def _option(name: str) -> str:
    return "--" + FLAG_ALIASES.get(name, name).replace("_", "-")


def _shown_default(value: Any) -> str:
    """A ``Settings`` default as the command line would spell it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "empty"
    return str(value).replace("%", "%%")


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One option per ``Settings`` field (default None: unset options leave env/defaults)."""
    for name, field in Settings.model_fields.items():
        env = f"CARE_SERVE_{name.upper()}"
        default = _shown_default(field.get_default(call_default_factory=True))
        help_text = f"{field.description} (default: {default}) [env {env}]"
        annotation = field.annotation
        args = typing.get_args(annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(args)
        elif annotation is int:
            kwargs["type"] = int
        elif annotation is float:
            kwargs["type"] = float
        parser.add_argument(_option(name), **kwargs)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve the models of a model store over REST and gRPC",
        description="Serve a model store over REST (FastAPI) and gRPC on one event loop. Every "
        "option is also an environment variable CARE_SERVE_<OPTION> (e.g. CARE_SERVE_HTTP_PORT).",
    )
    add_settings_options(parser)
    parser.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment + defaults, overridden by the options given on the command line."""
    given = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**given)


def run(args: argparse.Namespace) -> int:
    """Start the service and block until SIGINT/SIGTERM."""
    import asyncio

    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid settings: {problems}") from None
    from care_serve.observability.log_config import configure_logging
    from care_serve.server import ServingStack

    configure_logging(settings)

    asyncio.run(ServingStack(settings).serve_forever())
    # Stopped: what is left is the interpreter's teardown, whose garbage collection walks
    # every object of every module (0.3 s, over 1 s with torch loaded, more on a busy
    # machine) only to free memory the OS takes back anyway. Frozen objects are skipped.
    gc.freeze()
    return 0
