"""``python -m coldchain``: the same CLI as the ``coldchain`` entry point (on a board where the
entry point is not on PATH, e.g. a virtual environment that is not activated)."""

from coldchain.cli import main

main()
