"""``ansm`` command line. Commands register themselves on :data:`ansm.cli.app.app` when imported."""

from __future__ import annotations

import importlib

from ansm.cli.app import app

# One module per command (or group of commands). Adding a command = adding a module and a name here.
COMMAND_MODULES = ("data", "localizer", "attack", "defense", "detector", "benchmark", "demo", "serve")

for _mod in COMMAND_MODULES:
    importlib.import_module(f"ansm.cli.{_mod}")


def main() -> None:
    app()
