"""Prefect tasks of the RARE pipeline: thin wrappers that read an artifact, call rare_core and
write an artifact. ``tasks.steps`` (one task per operator), ``tasks.io`` (load/export/report),
``tasks.artifacts`` (the cache policy; the step files' rules are ``rare_core.artifacts``), ``tasks.llm`` (the run's LLM client),
``tasks.progress`` (progress artifacts and listeners)."""
