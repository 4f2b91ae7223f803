"""Reproduced experiments, one module each; :data:`bregnn.cli.COMMANDS` lists them.

A module here is a ``bregnn`` sub-command when it defines:

- ``NAME``: the sub-command name (e.g. ``"two-spiral"``);
- ``HELP``: a one-line description (shown by ``bregnn --help``);
- ``add_arguments(parser, argv)``: registers its options on an ``argparse`` parser;
  ``argv`` holds the command-line words after the sub-command's name, for options that
  depend on other options (e.g. the settings of the chosen ``--method``);
- ``run(args) -> int``: runs it and returns an exit status.

Every command stores its full resolved settings with :func:`bregnn.runs.prepare_run`
(which refuses to reuse a run directory silently), checks
:func:`bregnn.plotting.figures_or_note` before drawing, and ends with a printed table.
``--overwrite`` and ``--threads`` are added by :mod:`bregnn.cli` to every command.
"""
