"""Progress of long work: a tqdm bar when stderr is a terminal, otherwise a plain line every `every` seconds
(no carriage returns in piped or redirected logs).

    with progress_bar(total=n, desc="train", unit="img") as bar:
        for ...:
            bar.update()
"""
from __future__ import annotations

import sys
import time

import click

PLAIN_EVERY_S = 30.0


def on_terminal() -> bool:
    return sys.stderr.isatty()


class PlainProgress:
    """tqdm's update/write/set_postfix/close, printed as `desc: done/total unit (pct) rate, eta` lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, every: float | None):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.t0 = self.t_last = time.perf_counter()
        self.start, self.postfix = initial, ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.every is not None and now - self.t_last >= self.every:
            self.t_last = now
            click.echo(self.line(now), err=True)

    def line(self, now: float) -> str:
        rate = (self.n - self.start) / max(now - self.t0, 1e-9)
        eta = f", eta {(self.total - self.n) / rate:.0f} s" if rate > 0 and self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {rate:.1f} {self.unit}/s{eta}{self.postfix}"

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        click.echo(text)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(total: int, desc: str, unit: str = "img", *, initial: int = 0, enabled: bool = True,
                 every: float | None = PLAIN_EVERY_S):
    """A bar on a terminal, else plain lines every `every` seconds (None: none, when the caller logs its own);
    `enabled=False` (e.g. on ranks other than 0) shows nothing."""
    if enabled and on_terminal():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return PlainProgress(total, desc, unit, initial, every if enabled else None)


def echo(text: str) -> None:
    """Print a line without breaking a bar that may be on screen."""
    if on_terminal():
        from tqdm import tqdm
        tqdm.write(text)
    else:
        click.echo(text)
