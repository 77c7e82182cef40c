"""``medveil gateway``: a DICOM node (C-ECHO and C-STORE SCP) in front of the pipeline.

Each C-STORE is answered only once its instance is spooled and journalled
(:meth:`medveil.gateway.pipeline.Pipeline.receive`): success means the instance survives a crash
of the gateway. Forwarding runs in one thread beside the listener, so a slow or absent destination
never holds up a modality; what it cannot deliver stays pending and is tried again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from medveil.gateway.pipeline import Pipeline

log = logging.getLogger("medveil.gateway")

SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
VERIFICATION = "1.2.840.10008.1.1"  # the Verification SOP class (C-ECHO)


class Gateway:
    """The listener and the forwarding thread of one pipeline.

    Parameters
    ----------
    pipeline : Pipeline
        Where received instances go.
    ae_title, host, port :
        The node's AE title and where it listens.
    calling_aes : list of str
        The calling AE titles it accepts an association from; empty accepts any.
    """

    def __init__(self, pipeline: Pipeline, ae_title: str = "MEDVEIL", host: str = "127.0.0.1", port: int = 11112,
                 calling_aes: list[str] | None = None):
        self.pipeline = pipeline
        self.ae_title, self.host, self.port = ae_title, host, port
        self.calling_aes = list(calling_aes or [])
        self._stop = threading.Event()
        self._server: Any = None
        self._forwarder: threading.Thread | None = None

    def _store(self, event) -> int:
        try:
            self.pipeline.receive(event.encoded_dataset(), event.assoc.requestor.ae_title)
        except OSError as exc:  # a full disk: the sender keeps the instance and may try again
            log.error("could not spool an instance: %s", exc.strerror)
            return OUT_OF_RESOURCES
        return SUCCESS

    def start(self) -> None:
        """Listen (in pynetdicom's threads) and forward (in one thread of ours); returns at once."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        ae.require_calling_aet = self.calling_aes
        ae.maximum_pdu_size = 0  # no limit on what a peer may send per PDU; each instance is checked by the gate
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._forwarder = threading.Thread(target=self.pipeline.serve, args=(self._stop,), daemon=True,
                                           name="medveil-forwarder")
        self._forwarder.start()
        log.info("listening as %s on %s:%d; %d instance(s) pending from before", self.ae_title, self.host, self.port,
                 len(self.pipeline.journal.pending()))

    def stop(self) -> None:
        """Stop listening, let the forwarder finish its batch, close the journal."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        self.pipeline.wake()
        if self._forwarder is not None:
            self._forwarder.join()
        self.pipeline.close()
