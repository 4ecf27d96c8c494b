"""Events: the CloudEvents each audited change becomes (``catalog``), and the relay that
publishes the outbox to Kafka (``relay``, ``kafka``)."""
