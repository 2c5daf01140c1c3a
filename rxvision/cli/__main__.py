"""``python -m rxvision.cli``: the same as the ``rxvision`` command."""

from rxvision.cli.main import main

main()
