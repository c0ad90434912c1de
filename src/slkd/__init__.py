"""slkd: compress image-restoration networks by Simultaneous Learning Knowledge Distillation."""

__version__ = "0.1.0"

from slkd.errors import SlkdError

__all__ = ["SlkdError", "__version__"]
