"""The HTTP API: DICOMweb under /dicomweb, the viewer at /, built by ``create_app``."""

from lamina.api.app import create_app

__all__ = ["create_app"]
