"""What every command-line tool of the project shares: one error convention and defaults written once.

    if __name__ == "__main__":
        cli.run(main)          # main: a click command

Errors the user can fix (DataError, ConfigError, click's bad-option errors) print `error: <message>` once
(on rank 0 under torchrun) and exit with status 2; other exceptions are bugs and keep their traceback.
Under torchrun, the launcher itself then prints its failure report (with a Python traceback of its own)
whenever a rank exits non-zero; no child can prevent that short of exiting 0. A bug's traceback is recorded
for that report (torch.distributed.elastic's `record`), so its root-cause entry shows it.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys

import click

from common.errors import ConfigError, DataError

EXIT_USER_ERROR = 2
CONTEXT = {"help_option_names": ["-h", "--help"]}


def is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def print_error(message: str) -> None:
    """`error: message` on stderr, on rank 0 only."""
    if is_rank_zero():
        click.echo(f"error: {message}", err=True)


def fail(message: str) -> None:
    """Print `error: message` (rank 0 only) and exit 2."""
    print_error(message)
    sys.exit(EXIT_USER_ERROR)


def run(command: click.Command, args: list[str] | None = None) -> None:
    invoke = _invoke
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):  # under torchrun: a bug's traceback goes into its failure report
        from torch.distributed.elastic.multiprocessing.errors import record
        invoke = record(_invoke)
    invoke(command, args)


def _invoke(command: click.Command, args: list[str] | None) -> None:
    try:
        command.main(args=args, standalone_mode=False)
    except click.UsageError as e:  # bad option values: click's usage text, then the message
        if is_rank_zero():
            e.show()
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as e:
        fail(e.format_message())
    except (DataError, ConfigError) as e:
        fail(str(e))


def default(source, name: str):
    """The default of field `name` of a dataclass, or of parameter `name` of a function, so that a click
    option and the code it calls share one written value."""
    if dataclasses.is_dataclass(source):
        field = source.__dataclass_fields__[name]
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        value = field.default
    else:
        value = inspect.signature(source).parameters[name].default
    if value in (dataclasses.MISSING, inspect.Parameter.empty):
        raise KeyError(f"{source.__name__}: {name} has no default")
    return value
