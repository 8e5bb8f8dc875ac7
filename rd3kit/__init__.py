"""rd3kit: reproducibility kit for dataset distillation. Importing it touches no network, file or device."""

__version__ = "0.1.0"
