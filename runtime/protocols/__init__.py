"""Secret-shared protocols, one file per family; importing this registers them all."""
from . import beaver, linear, sharing  # noqa: F401
