"""Run the command line as `python -m {{ cookiecutter.module_name }}`."""

from .cli import main

main()
