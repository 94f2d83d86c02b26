"""How a script ends when it refuses to run: one line on stderr, exit code 2 for a command line it cannot run with
(``ConfigError``), 1 for input it cannot use (``ValueError``, ``OSError``). Anything else is a bug and keeps its
traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable


class ConfigError(SystemExit):
    """A command line the scripts cannot run with: an unknown option, a value of the wrong type or out of its
    range, a path that names nothing. Exits with the message; under ``run_main`` with exit code 2."""


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's ``main`` as a command; a refusal ends it with ``<script>: <what>`` and its exit code."""
    try:
        main()
        return
    except ConfigError as error:
        message, code = error.code, 2
    except (ValueError, OSError) as error:
        message, code = error, 1
    print(f"{os.path.basename(sys.argv[0])}: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)
