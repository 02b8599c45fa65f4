"""The Typer app and what every command shares: one-line errors, seeding, progress bars.

Each command lives in its own module under ``ansm/cli/`` and is a thin wrapper: parse, seed, call one
library function, print. Commands import heavy modules inside their body so ``ansm --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, Iterable, Iterator, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ansm.errors import AnsmError


def _click_exceptions() -> Any:
    """Typer's click exceptions: recent typer ships its own copy (``typer._click``, not click's classes, and
    click need not be installed); older typer uses click itself."""
    vendored = getattr(getattr(typer.core, "_click", None), "exceptions", None)
    if vendored is not None:
        return vendored
    import click.exceptions

    return click.exceptions


_click_exc = _click_exceptions()


class OneLineErrorGroup(typer.core.TyperGroup):
    """The command group with click's own errors (unknown option, a value that does not parse) as one
    ``error:`` line too, exit code 2, instead of click's three-line usage block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exc.NoArgsIsHelpError as exc:  # bare `ansm`: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except _click_exc.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "ansm"
            print_error(f"{exc.format_message()} (see: {where} --help)")
            sys.exit(exc.exit_code)
        except _click_exc.ClickException as exc:
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            console.print("aborted")
            sys.exit(1)
        # non-standalone click returns the exit code of a typer.Exit / --help, or the command's return value
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrorGroup,
    name="ansm",
    help="Attack, defend (ANSM) and benchmark image forgery localizers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# markup and highlighting off: messages hold user paths and names, which are printed exactly as given
# (Rich markup would eat "photo[final].png" and crash on "[/x]").
console = Console(stderr=True, markup=False, highlight=False)
T = TypeVar("T")


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, the message printed literally (never parsed as markup)."""
    console.print(Text.assemble(("error:", "bold red"), " ", " ".join(str(message).split("\n"))), soft_wrap=True)


def os_error_message(exc: OSError) -> str:
    """One line for an OSError the library did not anticipate: the path(s) it names and what went wrong."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{paths}: {reason}" if paths else reason


def friendly_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn :class:`AnsmError` (bad input, bad config) and OSError (a path that cannot be read or written, a full
    disk) into ``error: <message>`` and exit code 2; anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except AnsmError as exc:
            print_error(exc)
            raise typer.Exit(2) from None
        except OSError as exc:
            print_error(os_error_message(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted; completed outputs are kept and the run can be resumed")
            raise typer.Exit(130) from None

    return wrapper


def command(name: str, example: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register ``fn`` as ``ansm <name>``; the docstring is the help and ``example`` is shown under it."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        wrapped = friendly_errors(fn)
        app.command(name=name, epilog=f"Example:  {example}")(wrapped)
        return wrapped

    return deco


def progress(disable: bool | None = None) -> Progress | LineProgress:
    """A Rich progress bar on stderr where stderr is a terminal; elsewhere (a cluster job's log, ``nohup``) plain
    lines, one per task every ``ANSM_LOG_EVERY`` seconds (default 60) and one when such a long task finishes, so a
    log shows how far an hour-long job has got. ``disable=True`` is silent (DDP ranks other than 0); ``ANSM_PROGRESS=1`` forces
    the Rich bar."""
    import os

    if disable is None and not (sys.stderr.isatty() or os.environ.get("ANSM_PROGRESS")):
        every = os.environ.get("ANSM_LOG_EVERY", "60")
        try:
            seconds = float(every)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise AnsmError(f"ANSM_LOG_EVERY must be a number of seconds >= 0, got {every!r}")
        return LineProgress(seconds)
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=bool(disable),
        transient=False,
    )


class LineProgress:
    """The part of ``rich.progress.Progress`` the commands use (``add_task``, ``advance``, ``update``), writing
    ``description: done/total (pct), elapsed, ~left`` lines to stderr at most every ``every`` seconds per task, and
    one when a task that ran at least ``every`` seconds ends.

    ``update(task, advance=n, resumed=True)`` counts ``n`` items finished by an earlier, killed run: they move the
    bar but not the estimate of what is left, which would otherwise take a resumed hour-long job's first minutes
    for its pace (Rich keeps ``resumed`` as a task field and ignores it)."""

    def __init__(self, every: float = 60.0) -> None:
        import time

        self.every, self.clock, self.tasks = every, time.monotonic, {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        now = self.clock()
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": 0.0, "resumed": 0.0,
                                       "start": now, "shown": now, "finished": False}
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               description: str | None = None, total: float | None = None, resumed: bool = False, **_: Any) -> None:
        t = self.tasks[task_id]
        before = t["completed"]
        t["completed"] = completed if completed is not None else t["completed"] + (advance or 0)
        if resumed:
            t["resumed"] += t["completed"] - before
        t["description"], t["total"] = description or t["description"], total if total is not None else t["total"]
        now, done = self.clock(), t["total"] is not None and t["completed"] >= t["total"]
        # a line when one is due, and when a task that ran at least that long ends (a 1-second task says nothing)
        if t["finished"] or not (now - t["shown"] >= self.every or (done and now - t["start"] >= self.every)):
            return
        t["shown"], t["finished"] = now, done
        elapsed = now - t["start"]
        line = f"{t['description']}: {t['completed']:.0f}"
        if t["total"]:
            share = t["completed"] / t["total"]
            line += f"/{t['total']:.0f} ({share:.0%})"
        if t["resumed"]:
            line += f" ({t['resumed']:.0f} resumed)"
        line += f", {_clock(elapsed)} elapsed"
        timed = t["completed"] - t["resumed"]  # done by this process: the pace
        if t["total"] and timed > 0 and t["completed"] < t["total"]:
            line += f", ~{_clock(elapsed / timed * (t['total'] - t['completed']))} left"
        print(line, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"


@contextlib.contextmanager
def stage_bars(width: int = 44) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Always-visible bars, one per stage of a long pipeline (demo, benchmark): yields ``step(description, total)``,
    which adds a bar and returns its ``advance(n=1)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"{{task.description:<{width}}}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        def step(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)

        yield step


def track(items: Iterable[T], total: int | None, description: str) -> Iterable[T]:
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
