"""The worker: claims jobs from the PostgreSQL queue, runs schedules, and dispatches each job to
its use case; the search index jobs, and the queue's gauge and DEAD-job retries."""
