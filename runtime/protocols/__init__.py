"""Secret-shared protocols, one file per family; importing this registers them all."""
from . import beaver, compare, linear, sharing  # noqa: F401
