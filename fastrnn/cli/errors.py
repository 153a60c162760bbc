"""How the command reports a problem: one line on stderr, ``fastrnn: error: ...``."""
import sys

PROG = "fastrnn"


class CLIError(Exception):
    """A problem with the user's arguments or files: reported on one line, exit status 2."""


def one_line(exc):
    """The message of ``exc`` on one line (an OS error as ``<file>: <reason>``)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    return text


def warn(message):
    """Print ``fastrnn: warning: <message>`` on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)
