"""Into the hospital's DICOM flow: receive from a PACS or a modality, pass the gate, forward.

- :class:`Gateway` (``medveil gateway``): a C-STORE SCP that spools, gates and forwards;
- :func:`pull` (``medveil pull``): C-FIND and C-GET from a PACS into the same pipeline;
- :class:`Pipeline`: the spool, the gate, the quarantine, the journal and the audit log they share;
- :mod:`~medveil.gateway.destinations`: DICOM nodes, STOW-RS, folders;
- :mod:`~medveil.gateway.config`: one TOML file for all of it.
"""

from medveil.gateway.config import PipelineConfig, load
from medveil.gateway.destinations import DESTINATIONS, destination
from medveil.gateway.node import Gateway
from medveil.gateway.pipeline import Pipeline
from medveil.gateway.pull import Query, pull

__all__ = ["DESTINATIONS", "Gateway", "Pipeline", "PipelineConfig", "Query", "destination", "load", "pull"]
