"""mediaindex: search audio and video by what is said in it, down to the second."""
from .backends import (FatalError, IndexBackend, MediaError, NotReady, PermanentError, StorageBackend, Transcriber,
                       TranscriberLimits, TranscribeRequest, TransientError)
from .hookspecs import hookimpl
from .models import Media, ProbeResult, SearchHit, SearchQuery, SearchResult, Segment, Transcript, Word

__version__ = "0.1.0"
__all__ = ["hookimpl", "Media", "ProbeResult", "SearchHit", "SearchQuery", "SearchResult", "Segment",
           "Transcript", "Word", "IndexBackend", "StorageBackend", "Transcriber", "TranscriberLimits",
           "TranscribeRequest", "FatalError", "MediaError", "NotReady", "PermanentError", "TransientError"]
