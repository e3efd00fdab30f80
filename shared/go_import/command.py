"""The `import-go` and `reset-password` subcommands of `chat-group` (shared/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

import asyncpg
from pydantic import ValidationError
from redis.exceptions import RedisError

from shared.db.go_source import GoSchemaError
from shared.go_import.messages import GoDatabaseChangedError
from shared.go_import.run import FAILED, REFUSED, ImportOptions, ImportRefusedError, run_import
from shared.password_reset import (
    UnknownUserError,
    check_new_password,
    hash_new_password,
    reset_password,
)
from shared.runtime import new_event_loop, settle_gc
from shared.settings import load_settings

_DEFAULT_BATCH = 50_000
# Failures reported in one line (exit 1); the import resumes on the next run.
_RUN_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    go = commands.add_parser(
        "import-go",
        help="import a Go Chat Group Server database (README: Moving from the Go server)",
    )
    go.add_argument(
        "--source",
        metavar="URL",
        help="the Go database, postgresql://user:pass@host:port/db; default GO_DATABASE_URL,"
        " which keeps the password out of the process list",
    )
    go.add_argument(
        "--dry-run",
        action="store_true",
        help="print the report of what would change; write nothing",
    )
    go.add_argument(
        "--batch-size",
        type=_batch_size,
        default=_DEFAULT_BATCH,
        help=f"messages per transaction (default {_DEFAULT_BATCH:,})",
    )
    go.set_defaults(command=_import_go)
    reset = commands.add_parser(
        "reset-password",
        help="give a user a new password, read from the terminal (twice) or one line of stdin",
    )
    reset.add_argument("identity", help="the user's username or e-mail, as at log-in")
    reset.set_defaults(command=_reset_password)


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be 1 to 1,000,000")
    return value


def _import_go(args: argparse.Namespace) -> int:
    settings = load_settings()
    source = args.source
    if source is None and settings.go_database_url is not None:
        source = settings.go_database_url.get_secret_value()
    if not source:
        print("import-go: --source or GO_DATABASE_URL is required", file=sys.stderr)
        return 2
    options = ImportOptions(source, dry_run=args.dry_run, batch_size=args.batch_size)
    # A million messages allocate tens of millions of short-lived objects: the
    # collector the gateway runs less often would otherwise take a third of the copy.
    settle_gc()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(run_import(settings, options, sys.stdout, sys.stderr))
    except (ImportRefusedError, GoSchemaError, GoDatabaseChangedError) as exc:
        print(f"import-go refused: {exc}", file=sys.stderr)
        return REFUSED
    except _RUN_ERRORS as exc:
        print(
            f"import-go failed: {type(exc).__name__}: {exc}; what was committed stays,"
            " run it again to continue",
            file=sys.stderr,
        )
        return FAILED


def _reset_password(args: argparse.Namespace) -> int:
    settings = load_settings()
    if sys.stdin.isatty():
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            print("reset-password: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_new_password(password)
    except ValidationError:
        print("reset-password: a password has 8 to 128 characters", file=sys.stderr)
        return 1
    try:
        user_id = asyncio.run(
            reset_password(settings.postgres_dsn(), args.identity, hash_new_password(password))
        )
    except UnknownUserError:
        print(f"reset-password: no user {args.identity!r}", file=sys.stderr)
        return 1
    except _RUN_ERRORS as exc:
        print(f"reset-password failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED
    print(f"password set for user {user_id}")
    return 0
