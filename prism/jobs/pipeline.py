"""The former home of the job handlers and the document pipeline, kept only for
``prism.jobs.bi`` and ``prism.jobs.indexing`` until they import ``prism.jobs.handlers`` and
``prism.documents.processing`` themselves; nothing else imports it. Delete it then."""

from __future__ import annotations

from prism.documents.processing import INDEX, search_text
from prism.jobs.handlers import JobRun, complete

__all__ = ["INDEX", "JobRun", "complete", "search_text"]
