"""The step files of a run and their rules, framework-free: what a flow run writes where, under
which cache key, with which sidecar, and how runs sharing a cache folder lock each other out.

* :mod:`~rare_core.artifacts.refs` - :class:`ArtifactRef` (a file by path, sha256 and rows) and
  :class:`StepResult` (a step's file and summary);
* :mod:`~rare_core.artifacts.layout` - the files and folders of a run under ``cache_path``;
* :mod:`~rare_core.artifacts.keys` - a step's cache key, and the files named by it;
* :mod:`~rare_core.artifacts.sidecar` - the ``.meta.json`` beside a step file, and why a cached
  result must not be served;
* :mod:`~rare_core.artifacts.locks` - :class:`StepLocks` and :func:`claim`, the locks of runs on
  one cache folder;
* :mod:`~rare_core.artifacts.input_files` - step 0 of a run written as shard files, and the
  corpus file of a sharded run.

The modules are imported one by one (this package imports none of them): the corpus file's
format (:mod:`rare_core.retrieval.corpus_file`) needs :class:`ArtifactRef` while the config,
which the layout needs, imports the BM25 step that reads that format.
"""
