"""Personal data: a person's data exported as an encrypted bundle, and erasure with its cleanup."""
