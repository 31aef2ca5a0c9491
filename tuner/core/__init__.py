"""Core vocabulary every layer shares: the error tree, failure kinds and classification, request records, statistics."""
