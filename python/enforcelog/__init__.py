"""enforcelog: an embeddable, append-only audit log for policy-enforcement outcomes.

The store is the Rust library, running in this process. Start with
``enforcelog.Store`` and the drivers (``PolicyEnforcementWriteDriver``,
``record_enforcement_standalone``, ``PolicyEnforcementReadDriver``).
Log records go to the ``logging`` logger ``"enforcelog"``.
"""

import logging as _logging

from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all
from ._store import Action, Batch, Durability, QueryPage, RuleStats, Store, StoredEvent
from .drivers import (
    PolicyEnforcementReadDriver,
    PolicyEnforcementWriteDriver,
    get_default_store,
    record_enforcement_standalone,
    record_enforcement_standalone_sync,
    set_default_store,
)

_logging.getLogger("enforcelog").addHandler(_logging.NullHandler())

__all__ = [
    "Store", "Batch", "Action", "Durability", "StoredEvent", "QueryPage", "RuleStats",
    "PolicyEnforcementWriteDriver", "PolicyEnforcementReadDriver",
    "record_enforcement_standalone", "record_enforcement_standalone_sync", "set_default_store", "get_default_store",
    *_errors_all,
]
