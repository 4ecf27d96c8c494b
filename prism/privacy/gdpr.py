"""Former home of GDPR export and erasure, now ``prism.privacy.export`` and
``prism.privacy.erasure``. Kept only for the callers not yet moved to them (the job handlers
and the documents resolver); remove once they import the new modules."""

from __future__ import annotations

from prism.governance.cleanup import ERASE_CLEANUP, schedule_lake_rewrite
from prism.privacy.erasure import Cleanup, erase_released_document, run_erase_hooks
from prism.privacy.export import EXPORT, build_export, scope_of_payload

__all__ = [
    "ERASE_CLEANUP",
    "EXPORT",
    "Cleanup",
    "build_export",
    "erase_released_document",
    "run_erase_hooks",
    "schedule_lake_rewrite",
    "scope_of_payload",
]
