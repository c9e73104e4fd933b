"""The catalog: patients, studies, slides (series), instances, their frame index, and the audit log."""

from lamina.archive.catalog.catalog import Catalog, InstanceRow, SlideRow

__all__ = ["Catalog", "InstanceRow", "SlideRow"]
