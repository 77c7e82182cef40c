"""The ``medveil`` command: a thin layer over the library, one module per group of commands.

Commands import the heavy modules (PyTorch, scikit-learn, matplotlib) inside their bodies, so
``medveil --help``, keygen and obfuscate start in a fraction of the time.
"""

import typer

from medveil.cli import keys, images, evaluate, service, gateway  # noqa: F401, I001  (each registers its commands on app, in this order)
from medveil.cli._common import app

__all__ = ["app"]


def _version(value: bool) -> None:
    if value:
        from medveil import __version__

        typer.echo(f"medveil {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context, version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                                          help="Print medveil's version and exit.")):
    """Obfuscate medical images with a secret key; measure what utility and privacy survive.

    Exit status: 0 done; 1 some files failed (the others were written); 2 usage or input error.
    """
    from medveil import parallel
    from medveil.parallel.memory import keep_arrays_on_heap

    keep_arrays_on_heap()  # for this process's life: a command's process ends with it
    previous = parallel.set_cores(parallel.available_cores())  # per-image work (structural's tracing) on every core
    ctx.call_on_close(lambda: parallel.set_cores(previous))  # while the command runs, not after it (in a caller's process)
