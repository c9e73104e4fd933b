"""DICOM DIMSE for scanners, PACS and viewers: C-ECHO, C-STORE of slides, C-FIND on the catalog.

- :mod:`~lamina.dimse.server`: :class:`DimseServer`, the handlers bound to pynetdicom events.
- :mod:`~lamina.dimse.contexts`: the SOP classes and transfer syntaxes negotiated.
- :mod:`~lamina.dimse.store`: a C-STORE's object and the checks it must pass.
- :mod:`~lamina.dimse.spool`: each association's objects, durable until it ends.
- :mod:`~lamina.dimse.worker`: the ingest of released associations, one series per slide.
- :mod:`~lamina.dimse.find`: C-FIND matching on the catalog (Study Root, STUDY/SERIES/IMAGE).
- :mod:`~lamina.dimse.status`: the status codes answered.
"""

from lamina.dimse.server import DimseOptions, DimseServer

__all__ = ["DimseOptions", "DimseServer"]
