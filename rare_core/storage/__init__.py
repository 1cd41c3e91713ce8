"""Storage: frames in and out of json, jsonl, csv and parquet files, and the step layout of
the system we implement.

In: paths (the extension picks the format) and frames. Out: frames read back as each format
promises, files written atomically. Which module does what:

* ``frames``: the API by extension: ``read_frame`` / ``write_frame``, and for files too big to
  hold at once ``iter_frames``, ``count_rows``, ``frame_columns``, ``FrameWriter``; what each
  format gives back is in its docstring.
* ``json_format``, ``csv_format``, ``parquet_format``: reading and writing one format each.
* ``formats``: what every format shares (``FORMATS``, ``format_of``, cell conversions, read
  errors, the writer interface).
* ``atomic``: atomic writes (temp file + ``os.replace``), ``writing(path)``,
  ``write_text_atomic``, ``current_umask``.
* ``file_storage``: ``FileStorage``, the DataFlow-compatible step-by-step layout.
"""

from rare_core.storage.atomic import current_umask, write_text_atomic, writing
from rare_core.storage.file_storage import FileStorage
from rare_core.storage.formats import FORMATS, STREAMED_FORMATS, format_of
from rare_core.storage.frames import (
    FrameWriter, count_rows, frame_columns, iter_frames, read_frame, remove_frame, write_frame,
)

__all__ = [
    "FORMATS",
    "STREAMED_FORMATS",
    "FileStorage",
    "FrameWriter",
    "count_rows",
    "current_umask",
    "format_of",
    "frame_columns",
    "iter_frames",
    "read_frame",
    "remove_frame",
    "write_frame",
    "write_text_atomic",
    "writing",
]
