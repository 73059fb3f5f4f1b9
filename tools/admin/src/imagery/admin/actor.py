"""Who runs the command, as the audit trail records it: `cli:<os user>`."""

from __future__ import annotations

import getpass
import os


def cli_principal() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (arbitrary-uid containers)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"
