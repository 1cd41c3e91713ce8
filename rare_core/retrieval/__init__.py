"""BM25 on a real Lucene index (Anserini through pyjnius) and hard-negative selection.

``BM25Index.build(docs_df, index_dir_root, ...)`` builds or reuses a cached index;
``index.search(queries, k)`` returns :class:`SearchHits` ``(ids, scores)``; ``index.score``
gives one document's score for a query; ``select_negatives`` applies the hard-negative guards
to one ranking; ``Miner`` mines negatives for batches of questions over an index. Importing this package starts no JVM: the first build/search does.
"""

from rare_core.retrieval.index import BM25Index, SearchSettings
from rare_core.retrieval.mining import Mined, Miner
from rare_core.retrieval.negatives import Selection, normalize_text, select_negatives, text_key
from rare_core.retrieval.search import SearchHits

__all__ = ["BM25Index", "Mined", "Miner", "SearchHits", "SearchSettings", "Selection", "normalize_text", "select_negatives", "text_key"]
