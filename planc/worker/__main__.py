"""``python -m planc.worker --config FILE``: serve a worker or the dealer (cli.py)."""
import sys

from .cli import entry

sys.exit(entry())
