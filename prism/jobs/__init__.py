"""The job queue, workers, job handlers and analyzers."""
