"""``python -m planc.worker --config FILE``: serve a worker or the dealer (cli.py)."""
import sys

from .cli import entry

# guarded: importing every module (the wheel check does) must not start a daemon
if __name__ == "__main__":
    sys.exit(entry())
