"""What the trials so far teach the search: constraints learned from repaired crashes, configurations
already measured (no duplicates), repairs to try after a crash (:class:`tuner.search.guide.SearchGuide`)."""
