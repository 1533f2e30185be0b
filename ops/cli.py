"""What the operator's commands share at the terminal."""
import signal


def quiet_when_reader_leaves():
    """End quietly, as any Unix tool does, when whoever reads the output goes
    away (``make status | head``, ``make mail | head -3``): Python ignores
    SIGPIPE and would print a BrokenPipeError traceback instead. Only for
    commands that print and change nothing."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
