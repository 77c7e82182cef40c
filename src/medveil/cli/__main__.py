"""``python -m medveil.cli``: what the ``medveil`` command runs."""

from medveil.cli import app

app()
