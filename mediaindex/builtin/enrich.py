"""Basic offline enrichment: fill each segment's language when the engine left it empty.

Emotion is never guessed here: no offline model for it ships in a package, so it stays empty
unless an engine (Qwen3-ASR) or a plugin supplies it.
"""
from __future__ import annotations

from ..hookspecs import hookimpl

ENRICH_VERSION = "1"  # bump when the output changes: stored enrichments are then redone
_MIN_CHARS = 12  # below this, text language ID is a coin toss: use the media's language


def detect_language(text: str) -> tuple[str | None, float]:
    """ISO 639-1 code and confidence for a text, with py3langid (offline, 5 MB model)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        return None, 0.0
    global _identifier
    if _identifier is None:
        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, prob = _identifier.classify(text)
    return lang, float(prob)


_identifier = None


@hookimpl
def enrich_segments(media, transcript):
    if transcript.language is None:
        text = " ".join(s.text for s in transcript.segments)
        if len(text) >= _MIN_CHARS:
            lang, prob = detect_language(text)
            if lang and prob >= 0.5:
                transcript.language = lang
    for seg in transcript.segments:
        if seg.language is None and len(seg.text) >= 4 * _MIN_CHARS:
            lang, prob = detect_language(seg.text)
            if lang and prob >= 0.9:
                seg.language = lang
        if seg.language is None:
            seg.language = transcript.language
    if media.language is None:
        media.language = transcript.language
