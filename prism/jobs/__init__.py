"""The worker: claims jobs from the PostgreSQL queue, runs schedules, and dispatches each job to
its use case."""
