"""The `dqc` console script. Its first act is to take over Ctrl-C (`dqcodec.cli.interrupt`), before
dqcodec, click or torch are imported: a Ctrl-C at any moment is one line and exit 130."""

import os
import signal


def _early(_signum: int, _frame: object) -> None:  # nothing is written yet: nothing to remove
    os.write(2, b"dqc: interrupted\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _early)
    from dqcodec.cli import interrupt

    interrupt.install()
    from dqcodec.cli.main import main as run

    run()
