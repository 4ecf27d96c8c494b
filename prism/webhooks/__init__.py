"""Partners' webhooks: endpoints an organization's ADMIN registers, and the dispatcher that
delivers the organization's outbox events to them, signed (Standard Webhooks), retried, and
guarded against reaching what they must not (``guard``)."""
