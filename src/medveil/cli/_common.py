"""What every command shares.

The Typer app, options several commands take, and the one way errors, keys and verdicts reach the terminal.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from medveil.errors import KeyEncryptedError, MedveilError
from medveil.keys import PASSPHRASE_ENV, Key

# Commands import the heavy modules (PyTorch, scikit-learn, matplotlib) inside their bodies so
# `medveil --help`, keygen and obfuscate start in a fraction of the time.
COLOUR_HELP = ("Colour: 'rgb' keeps the files' colour; a matplotlib colormap name (e.g. viridis) renders the "
               "grayscale images in colour. Default: grayscale.")
# Options several commands take.
Colour = Annotated[Optional[str], typer.Option(help=COLOUR_HELP)]
DatasetName = Annotated[str, typer.Option(help="'br35h' or a folder with one subfolder per class.")]
Device = Annotated[str, typer.Option(help="Where models train and predict: auto (a CUDA GPU when torch sees one, "
                                          "else the CPU), cpu, cuda or cuda:N. Keys and obfuscation stay on the CPU. "
                                          "On a GPU, Privacy-Net 3-D and segmentation losses use two operations with "
                                          "no deterministic CUDA kernel (max_pool3d's and nll_loss2d's backward): "
                                          "their results may differ in the last digits from run to run.")]

app = typer.Typer(add_completion=False, no_args_is_help=True)


def echo_json(value) -> None:
    typer.echo(json.dumps(value, default=str))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {message}", err=True)


warnings.showwarning = _one_line_warning  # the CLI's warnings are for people: one line, no source location


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def clean_errors(command):
    """Turn library errors, and the OS refusing a path the user gave, into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MedveilError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))

    return wrapper


def use_device(name: str) -> None:
    from medveil.nn.device import resolve_device, set_default_device

    set_default_device(name)
    resolve_device()  # a missing GPU is one line now, not a traceback after loading the data


def load_key(path: Path) -> Key:
    """Return the key at ``path``; an encrypted one is opened with MEDVEIL_KEY_PASSPHRASE, or a prompt at a terminal."""
    try:
        return Key.load(path)
    except KeyEncryptedError:
        if not sys.stdin.isatty():
            raise
        return Key.load(path, passphrase=typer.prompt(f"passphrase for {path}", hide_input=True))


def new_passphrase() -> str:
    """Return a passphrase for encrypting a key: MEDVEIL_KEY_PASSPHRASE, or asked twice at a terminal."""
    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        fail(f"no passphrase: set {PASSPHRASE_ENV} or run at a terminal")
    return typer.prompt("new passphrase", hide_input=True, confirmation_prompt=True)


ALLOW_BROKEN_HELP = ("Go on with a setting the shipped privacy cards call broken under ciphertext-only (the service "
                     "itself recovers the images).")


def check_broken(key: Key, allow_broken: bool, command: str) -> None:
    """Refuse a setting the cards call broken under ciphertext-only, unless the user said --allow-broken."""
    from medveil.evaluation.cards import broken_under_service

    card = broken_under_service(key.scheme, key.params)
    if card and not allow_broken:
        fail(f"{command}: the privacy cards call {key.scheme} {card.params} broken under ciphertext-only: "
              f"{card.attack} recovers the images from what the service holds (SSIM {card.ssim:.2f}); "
              "run `medveil keygen` for the setting they rate best, or pass --allow-broken")


def echo_verdicts(scheme: str, params) -> None:
    """Return the privacy cards' verdict on a setting, one line per threat model (as a DP tool states its epsilon)."""
    from medveil.evaluation.cards import verdict_lines

    for line in verdict_lines(scheme, params):
        typer.echo(f"  {line}")


def command_line() -> str | None:
    """Return the command as typed, for reports (None when called from Python)."""
    return "medveil " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("medveil") else None
