"""DICOM DIMSE for scanners, PACS and viewers: C-ECHO, C-STORE of slides, C-FIND on the catalog,
C-MOVE and C-GET of stored instances, and the C-STORE SCU of ``lamina send``.

- :mod:`~lamina.dimse.server`: :class:`DimseServer`, the handlers bound to pynetdicom events.
- :mod:`~lamina.dimse.contexts`: the SOP classes and transfer syntaxes negotiated.
- :mod:`~lamina.dimse.store`: a C-STORE's object, handed to the archive's receive path
  (:mod:`lamina.archive.receive`: its checks, the association's spool, the ingest on release).
- :mod:`~lamina.dimse.find`: C-FIND matching on the catalog (Study Root, STUDY/SERIES/IMAGE).
- :mod:`~lamina.dimse.retrieve`: Study Root C-MOVE and C-GET (STUDY/SERIES/IMAGE), their
  sub-operations and statuses; :mod:`~lamina.dimse.acceptor` routes them past pynetdicom's
  in-memory retrieve.
- :mod:`~lamina.dimse.storescu`: one stored instance C-STOREd to a peer, streamed from its file;
  :mod:`~lamina.dimse.transcode`: its uncompressed fallback.
- :mod:`~lamina.dimse.send`: ``lamina send``, slides to a peer in one association.
- :mod:`~lamina.dimse.status`: the status codes answered.
"""

from lamina.dimse.server import DimseOptions, DimseServer

__all__ = ["DimseOptions", "DimseServer"]
