"""lamina: digital pathology slides from any scanner, kept as standard DICOM WSI."""

__version__ = "0.1.0"
