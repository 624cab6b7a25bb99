"""The command line: every command documents itself with --help.

One module per group of commands; `common.py` holds what they share, and the one
place where errors become messages (`user_errors`).
"""

import logging

import click

from . import batch, data, models, monitoring, serving


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Train, track, register, promote and serve the model."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for module in (data, models, serving, batch, monitoring):
    for command in module.COMMANDS:
        main.add_command(command)
