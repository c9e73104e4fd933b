"""The associations lamina accepts: pynetdicom's, with Study Root C-GET and C-MOVE served by
lamina's own retrieve (:mod:`lamina.dimse.retrieve`).

Why not pynetdicom's Query/Retrieve service class: it takes each instance to send as a pydicom
``Dataset`` and encodes it whole in memory before the C-STORE, and it counts the sub-operations
itself, so a handler cannot send from a file and still report true counts. A slide level is
often gigabytes. lamina's retrieve sends each instance from its file in PDU-sized chunks
(``Association.send_c_store(path)``) and writes the C-GET / C-MOVE responses itself.

The seam is small and kept here: a request handler whose associations route those two requests
(on the Study Root contexts only) to a :data:`Retriever`, and hand everything else, C-ECHO,
C-STORE and C-FIND included, to pynetdicom unchanged. It relies on pynetdicom 3.0's
``RequestHandler._create_association`` and ``Association._serve_request``; the retrieve tests
(dcmtk ``movescu`` and ``getscu``) fail loudly if a pynetdicom release changes them.

Each association also carries the calling AE it was accepted as (:attr:`RetrievingAssociation.caller`,
:mod:`lamina.dimse.access`). Over TLS, the handshake is made on the association's own thread, not
in the loop that accepts connections (pynetdicom's default), so that a peer that connects and
says nothing holds up only its own connection.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from lamina.dimse.contexts import STUDY_ROOT_GET, STUDY_ROOT_MOVE
from lamina.peers import CallingEntity

log = logging.getLogger("lamina.dimse")

#: Serves one C-GET or C-MOVE request: sends its responses and sub-operations on the association.
Retriever = Callable[[Association, C_GET | C_MOVE, PresentationContext], None]
RETRIEVE_SOP_CLASSES = (STUDY_ROOT_GET, STUDY_ROOT_MOVE)


class RetrievingAssociation(Association):
    """An accepted association whose Study Root C-GET and C-MOVE go to :attr:`retriever`."""

    retriever: Retriever | None = None
    #: the calling AE this association was accepted as (set when it is requested)
    caller: CallingEntity | None = None

    def _serve_request(self, msg: Any, context_id: int) -> None:
        context = next((cx for cx in self.accepted_contexts if cx.context_id == context_id), None)
        ours = (
            self.retriever is not None
            and isinstance(msg, C_GET | C_MOVE)
            and msg.is_valid_request
            and context is not None
            and context.abstract_syntax in RETRIEVE_SOP_CLASSES
        )
        if not ours or self.retriever is None or context is None:
            super()._serve_request(msg, context_id)
            return
        # as pynetdicom does around a service class: C-CANCELs count for this request only, and
        # the reactor is marked paused while the handler itself sends (C-STOREs of a C-GET)
        self.dimse.cancel_req = {}
        self._is_paused = True
        try:
            self.retriever(self, msg, context)
        except Exception:
            log.exception("C-GET/C-MOVE failed; the association is aborted")
            self.abort()
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}


class _RequestHandler(RequestHandler):
    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.__class__ = RetrievingAssociation
        assert isinstance(assoc, RetrievingAssociation)
        assoc.retriever = getattr(self.server, "retriever", None)
        return assoc


class _Server(ThreadedAssociationServer):
    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept; over TLS, wrap without the handshake: it happens at the first read, on the
        association's thread (a silent peer would otherwise stop the accepting loop)."""
        client, address = self.socket.accept()  # type: ignore[union-attr]
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


def start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    retriever: Retriever,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Listen on ``address`` without blocking, as ``AE.start_server(..., block=False)`` does, with
    the event ``handlers`` bound, Study Root C-GET / C-MOVE served by ``retriever``, and TLS only
    when ``ssl_context`` is given."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=_Server,
        request_handler=_RequestHandler,
    )
    server.retriever = retriever  # type: ignore[attr-defined]  # read by _RequestHandler
    thread = threading.Thread(target=server.serve_forever, name="lamina-dimse-acceptor", daemon=True)
    thread.start()
    ae._servers.append(server)  # pynetdicom's shutdown() removes it from there
    return server
