"""The OpenAPI 3.1 description of the JSON API, served at ``/api/openapi.json``.

Hand-written (the endpoints are few and their parameters matter more than a generator would
say); ``tests/test_web_api.py`` checks that every ``/api`` route of the app is described here.
"""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_MEDIA_ID = {"name": "media_id", "in": "path", "required": True,
             "description": "Media id (hex content hash, as returned in search hits).",
             "schema": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"}}


def _q(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


_DATE_TEXT = ("Only recordings of this year (`2024`) or month (`2024-03`): the recording's `date` (or `year`) "
              "tag when it has one, else its file's modification month (UTC). Documents indexed before dates "
              "existed are dated by their file until `mediaindex reindex`.")
_FILTERS = [
    _q("q", "Words to find, all of them (AND). `\"quoted words\"`: a phrase; the last word is a prefix unless "
            "the query ends with a space (search as you type); `-word` or `-\"a phrase\"`: leave out segments "
            "with it; `a OR b`: either word. Forgiven (built-in index): typos in a word the index does not "
            "have (1 edit from 5 letters, 2 from 9), words that sound the same (Double Metaphone; pinyin for "
            "Chinese), numbers in digits or words (17 / seventeen, 1953 / nineteen fifty three, 50,000 / fifty "
            "thousand, 3rd / third), British/American spellings, hyphens, apostrophes, split or joined "
            "compounds. Matches of the words as typed always rank first. Titles, artists, albums, file names "
            "and folder words are searched too.",
       {"type": "string", "maxLength": 500}),
    _q("lang", "Only segments in this language (e.g. en, zh).", {"type": "string"}),
    _q("emotion", "Only segments with this emotion.", {"type": "string"}),
    _q("kind", "Only segments of this kind.", {"type": "string", "enum": ["speech", "singing", "music"]}),
    _q("source", "Only segments from this source: speech recognition, lyrics, subtitles, or a sound moment "
       "(music or an event, no words).", {"type": "string", "enum": ["asr", "lyrics", "subtitle", "sound"]}),
    _q("event", "Only segments where this sound event was heard (laughter, applause, music...).",
       {"type": "string"}),
    _q("path", "Only media under this absolute folder or storage URI (or this one file).",
       {"type": "string"}),
    _q("date", _DATE_TEXT, {"type": "string", "pattern": "^[0-9]{4}(-(0[1-9]|1[0-2]))?$"}),
]


def _action(summary: str, description: str, body: dict[str, Any], params=()) -> dict[str, Any]:
    """A POST that queues work in the state database's job queue (a running `watch` picks it up)."""
    return {
        "summary": summary, "parameters": list(params),
        "description": description + " The work goes to the job queue in the state database: a running "
        "`mediaindex watch` (any process on this data dir) claims it within a second, else the next `index` "
        "or `watch` does. Against cross-site request forgery the body must be JSON and a browser's request "
        "must come from this server's own page (`Origin`, `Sec-Fetch-Site`).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body or {"type": "object"}}}},
        "responses": {"202": {"description": "Queued", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "queued": {"type": "array", "items": {"type": "string"}, "description": "The files queued."},
                "action": {"type": "string"},
                "worker": {"type": "boolean", "description": "An indexer (`watch`, `index`) holds the data dir "
                           "now: the work starts at once."}}}}}},
                      "400": _ERROR, "403": _ERROR, "404": _ERROR, "408": _ERROR, "409": _ERROR, "413": _ERROR,
                      "415": _ERROR}}


def openapi_spec(version: str) -> dict[str, Any]:
    media_get = lambda summary, description, content, extra=None, responses=None: {  # noqa: E731
        "get": {
            "summary": summary, "description": description,
            "parameters": [_MEDIA_ID, *(extra or [])],
            "responses": {"200": {"description": "OK", "content": content}, "400": _ERROR, "404": _ERROR,
                          **(responses or {})},
        }
    }
    text = lambda t: {t: {"schema": {"type": "string"}}}  # noqa: E731
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "mediaindex API", "version": version,
            "description": "Search audio and video by what is said in it; play, caption and cut from the moment. "
                           "When the server was started with a token, every call needs it (every route but "
                           "/api/login, the web page and its static files, plugin routes included): "
                           "`Authorization: Bearer <token>`, `?token=<token>` or the cookie set by /api/login. "
                           "Without a token, only requests to a loopback host name or address are answered "
                           "(421 otherwise).",
        },
        "components": {
            "responses": {"Unauthorized": {
                "description": "The server was started with a token and this call did not carry it "
                               "(WWW-Authenticate: Bearer).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "TooManyWrongTokens": {
                "description": "Ten wrong tokens came from this address within a minute (then one more "
                               "try every 6 s); wait Retry-After seconds. Nothing is checked meanwhile.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query": {"type": "apiKey", "in": "query", "name": "token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "mediaindex_token"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"],
                          "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "Hit": {"type": "object", "properties": {
                    "media_id": {"type": "string"}, "path": {"type": "string"}, "title": {"type": "string"},
                    "folder": {"type": "string"},
                    "time": {"type": "number", "description": "Start of the first matched word (seconds)."},
                    "jump": {"type": "number", "description": "Where a player should start: 1 s before `time`."},
                    "clock": {"type": "string", "description": "`time` as HH:MM:SS."},
                    "start": {"type": "number"}, "end": {"type": "number"}, "segment_index": {"type": "integer"},
                    "text": {"type": "string"},
                    "snippet": {"type": "string", "description": "HTML: the text escaped, matches in <mark>."},
                    "language": {"type": ["string", "null"]}, "emotion": {"type": ["string", "null"]},
                    "kind": {"type": "string"}, "score": {"type": "number"}, "matched_words": {"type": "integer"},
                    "match": {"type": "string", "enum": ["text", "title"], "description":
                              "`title`: the media's title, artist, album, file name or folder matched (the hit "
                              "is its best segment, or its start when the words are not said)."},
                    "forgiven": {"type": "boolean", "description": "Found only through a forgiven form."},
                    "source": {"type": "string", "enum": ["asr", "lyrics", "subtitle", "sound"],
                               "description": "Where the words come from."},
                    "events": {"type": "array", "items": {"type": "string"},
                               "description": "Sound events heard in this segment."},
                    "link": {"type": "string", "description": "Deep link to the moment in the web UI."}}},
                # The same shape is printed by `mediaindex search --json` (mediaindex/hits.py).
                "SearchResult": {"type": "object", "properties": {
                    "query": {"type": "string"}, "total": {"type": "integer"},
                    "total_exact": {"type": "boolean", "description": "False when `total` is an estimate."},
                    "partial": {"type": "boolean", "description": "True when no segment has every word."},
                    "stopped_early": {"type": "boolean", "description": "True when the search for partial matches "
                                      "stopped at its work limit (a long query): closer matches may exist."},
                    "did_you_mean": {"type": ["string", "null"], "description":
                                     "When nothing matched the words as typed: the query with the words that "
                                     "matched instead (e.g. `lighthouse` for `lighthose`)."},
                    "forgiven": {"type": "array", "description": "Query words that matched other index words in "
                                 "these hits (typo, sound, number, spelling, compound).",
                                 "items": {"type": "object", "properties": {
                                     "word": {"type": "string"}, "why": {"type": "string"},
                                     "matched": {"type": "array", "items": {"type": "string"}}}}},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                    "group": {"type": "string", "enum": ["media"], "description": "Only with `group=media`: "
                              "`total`, `limit` and `offset` count recordings; `hits` holds each one's best hit."},
                    "groups": {"type": "array", "description": "Only with `group=media`: one per recording, best "
                               "first.", "items": {"$ref": "#/components/schemas/Group"}}}},
                "Group": {"type": "object", "properties": {
                    "media_id": {"type": "string"}, "title": {"type": "string"}, "path": {"type": "string"},
                    "folder": {"type": "string"},
                    "best": {"$ref": "#/components/schemas/Hit", "description": "The best ranked hit (its snippet)."},
                    "moments": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"},
                                "description": "The recording's hits (at most `moments`), in time order."},
                    "moments_total": {"type": "integer", "description": "Hits in this recording in all."},
                    "moments_exact": {"type": "boolean", "description": "False when `moments_total` is an estimate."}}},
                "Facets": {"type": "object", "description": "Documents per value of each facet; an index "
                           "or plugin may add facets beside these (`source` and `event`: sound events, from the enrichers).",
                           "properties": {
                    "query": {"type": "string"},
                    "estimated": {"type": "boolean", "description": "Counts scaled from the newest matches "
                                  "of a frequent query: approximate."},
                    **{k: {"type": "object", "additionalProperties": {"type": "integer"}}
                       for k in ("language", "emotion", "kind", "folder", "source", "event")},
                    "month": {"type": "object", "additionalProperties": {"type": "integer"}, "description":
                              "Documents per month of recording (`YYYY-MM`; `YYYY` when a tag gives only the "
                              "year); absent for the empty query under a language, emotion, kind or folder filter."},
                    "year": {"type": "object", "additionalProperties": {"type": "integer"},
                             "description": "Documents per year of recording (the months added up)."}},
                           "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}},
                "Word": {"type": "object", "properties": {
                    "text": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"},
                    "interpolated": {"type": "boolean"}}},
                "Segment": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "start": {"type": "number"}, "end": {"type": "number"},
                    "text": {"type": "string"}, "language": {"type": ["string", "null"]},
                    "emotion": {"type": ["string", "null"]}, "kind": {"type": "string"},
                    "channel": {"type": ["integer", "null"]}, "source": {"type": "string"},
                    "words": {"type": "array", "items": {"$ref": "#/components/schemas/Word"}}}},
                "Media": {"type": "object", "properties": {
                    "id": {"type": "string"}, "title": {"type": "string"}, "path": {"type": "string"},
                    "paths": {"type": "array", "items": {"type": "string"}}, "folder": {"type": "string"},
                    "size": {"type": "integer"}, "mtime": {"type": "number"},
                    "duration": {"type": ["number", "null"]}, "container": {"type": ["string", "null"]},
                    "has_video": {"type": "boolean"}, "channels": {"type": ["integer", "null"]},
                    "tags": {"type": "object"}, "status": {"type": "string"}, "error": {"type": ["string", "null"]},
                    "engine": {"type": ["string", "null"]}, "language": {"type": ["string", "null"]},
                    "cost": {"type": "number"}, "playable": {"type": "boolean"},
                    "stream_url": {"type": "string"}, "captions_url": {"type": "string"},
                    "clip_url": {"type": "string"}, "artwork_url": {"type": ["string", "null"]}, "exports": {"type": "object"},
                    "transcript": {"type": ["object", "null"]},
                    "segments": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}}}},
                "Status": {"type": "object", "properties": {
                    "files": {"type": "object", "description": "Files by state: queued, running, indexed, failed, total."},
                    "failed": {"type": "array", "description": "A page of the failed files, by path "
                               "(failed_limit from failed_offset); `files.failed` counts them all.",
                               "items": {"type": "object", "properties": {
                                   "path": {"type": "string"}, "error": {"type": "string"}}}},
                    "failed_limit": {"type": "integer"}, "failed_offset": {"type": "integer"},
                    "retrying": {"type": "integer"}, "media": {"type": "integer"},
                    "hours_indexed": {"type": "number"}, "spent": {"type": "number"},
                    "spent_by_engine": {"type": "object", "description": "Per paid engine (cache key): "
                                        "media, billed seconds, cost."},
                    "spent_by_file": {"type": "array", "description": "The most expensive paid files (at most "
                                      "50; `spent_files` counts them all): engine, model, route (flash, "
                                      "flash-chunks, filetrans), billed seconds, cost.",
                                      "items": {"type": "object", "properties": {
                                          "media_id": {"type": "string"}, "path": {"type": ["string", "null"]},
                                          "engine": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]},
                                          "route": {"type": ["string", "null"]}, "seconds": {"type": "number"},
                                          "cost": {"type": "number"}}}},
                    "spent_files": {"type": "integer"},
                    "roots": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "status": {"type": "string", "enum": ["online", "offline"]}}}},
                    "jobs": {"type": "object"}, "version": {"type": "string"}, "index": {"type": "string"},
                    "auth": {"type": "boolean"}}},
            },
        },
        "security": [{"bearer": []}, {"query": []}, {"cookie": []}],
        "paths": {
            "/api/search": {"get": {
                "summary": "Search", "description": "Ranked hits, each with the time of its first matched word; "
                "with `group=media`, recordings, each with its moments (hits of the same shape) in time order.",
                "parameters": [*_FILTERS,
                               _q("group", "`none`: one hit per moment (the default). `media`: one result per "
                                  "recording (its best hit, and its moments in `groups`); limit and offset then "
                                  "page over recordings.", {"type": "string", "enum": ["none", "media"],
                                                            "default": "none"}),
                               _q("moments", "With `group=media`: moments listed per recording.",
                                  {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}),
                               _q("limit", "Hits per page.", {"type": "integer", "minimum": 0, "maximum": 100, "default": 20}),
                               _q("offset", "Hits to skip.", {"type": "integer", "minimum": 0, "maximum": 10000, "default": 0})],
                "responses": {"200": {"description": "OK", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SearchResult"}}}}, "400": _ERROR}}},
            "/api/facets": {"get": {
                "summary": "Facet counts", "description": "Segments per language, emotion, kind and folder (and any facet a plugin adds) for the query; counts of a frequent query may be estimated.",
                "parameters": _FILTERS,
                "responses": {"200": {"description": "OK", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Facets"}}}}, "400": _ERROR}}},
            "/api/status": {"get": {
                "summary": "Indexing status", "description": "Files by state, failures (a page of them), spend, "
                                                             "roots, queue.",
                "parameters": [
                    _q("failed_limit", "Failed files to list.",
                       {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}),
                    _q("failed_offset", "Failed files to skip (they are sorted by path).",
                       {"type": "integer", "minimum": 0, "default": 0})],
                "responses": {"200": {"description": "OK", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Status"}}}}, "400": _ERROR}}},
            "/api/openapi.json": {"get": {
                "summary": "This description", "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
            "/api/login": {"post": {
                "summary": "Log in the web page", "security": [],
                "description": "Checks the token and sets an HttpOnly, SameSite=Strict cookie for the UI and its media elements.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["token"],
                                                    "properties": {"token": {"type": "string"}}}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object",
                                                                     "properties": {"token": {"type": "string"}}}}}},
                "responses": {"204": {"description": "Logged in (cookie set)"}, "400": _ERROR, "401": _ERROR,
                              "408": _ERROR, "413": _ERROR, "415": _ERROR}}},
            "/api/media": {"get": {
                "summary": "The library", "description": "Every recording (title, folder, duration, date added, "
                "language, engine, route, cost, state), sorted, filtered and paged; recently added first.",
                "parameters": [
                    _q("sort", "Order: added, modified, title, duration (largest or newest first); a leading - "
                               "reverses it.", {"type": "string", "enum": ["added", "-added", "modified", "-modified",
                                                                         "title", "-title", "duration", "-duration"],
                                                "default": "added"}),
                    _q("path", "Only recordings under this absolute folder or storage URI.", {"type": "string"}),
                    _q("lang", "Only recordings in this language.", {"type": "string"}),
                    _q("kind", "Only audio or only video.", {"type": "string", "enum": ["audio", "video"]}),
                    _q("state", "Only recordings in this state.", {"type": "string", "enum": ["pending", "indexed"]}),
                    _q("date", _DATE_TEXT, {"type": "string", "pattern": "^[0-9]{4}(-(0[1-9]|1[0-2]))?$"}),
                    _q("limit", "Recordings per page.", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}),
                    _q("offset", "Recordings to skip.", {"type": "integer", "minimum": 0, "default": 0})],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "total": {"type": "integer"}, "offset": {"type": "integer"}, "limit": {"type": "integer"},
                        "sort": {"type": "string"}, "items": {"type": "array", "items": {"type": "object"}}}}}}},
                    "400": _ERROR}}},
            "/api/retry": {"post": _action(
                "Retry every failed file", "Queues every file that failed for indexing again.", {})},
            "/api/transcribers": {"get": {
                "summary": "Engines", "description": "The engines (and engine families) a recording can be "
                "transcribed with; `default` is the one new files get.",
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "default": {"type": ["string", "null"]},
                        "transcribers": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string"}, "family": {"type": ["string", "null"]},
                            "paid": {"type": "boolean"}}}}}}}}}}}},
            "/api/media/{media_id}/retry": {"post": _action(
                "Retry a recording", "Queues the recording's failed files for indexing again (409: none failed).",
                {}, [_MEDIA_ID])},
            "/api/media/{media_id}/reindex": {"post": _action(
                "Transcribe again", "Queues the recording's files to be transcribed again with another engine; "
                "the old transcript stays searchable until the new one is indexed (a failure keeps it).",
                {"type": "object", "required": ["transcriber"], "properties": {"transcriber": {
                    "type": "string", "description": "An engine or family from /api/transcribers."}}},
                [_MEDIA_ID])},
            "/api/media/{media_id}": media_get(
                "Media and transcript", "Metadata plus every transcript segment with its word times.",
                {"application/json": {"schema": {"$ref": "#/components/schemas/Media"}}}),
            "/api/media/{media_id}/stream": {
                **media_get("Media bytes", "The file, by id, with HTTP Range support (206, 416, Accept-Ranges). "
                            "HEAD is answered too.", {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                            [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                              "description": "bytes=first-last, bytes=first- or bytes=-suffix"}],
                            {"206": {"description": "The requested byte range (Content-Range)",
                                     "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                             "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                             "416": _ERROR}),
            },
            "/api/media/{media_id}/captions.vtt": media_get(
                "Captions", "WebVTT cues from the transcript segments.", text("text/vtt")),
            "/api/media/{media_id}/export.{fmt}": media_get(
                "Export the transcript", "SRT, WebVTT, JSON or plain text, as a download.",
                {"application/x-subrip": {"schema": {"type": "string"}}, "text/vtt": {"schema": {"type": "string"}},
                 "application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}}},
                [{"name": "fmt", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": ["srt", "vtt", "json", "txt"]}}]),
            "/api/media/{media_id}/clip": media_get(
                "Cut a clip", "An audio (MP3) or video (MP4) clip from t-before to t+after, cut with ffmpeg. "
                              "before and after are at most 60 s each.",
                {"audio/mpeg": {"schema": {"type": "string", "format": "binary"}},
                 "video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                [_q("t", "The moment (seconds, 0..duration).", {"type": "number", "minimum": 0}, True),
                 _q("before", "Seconds before t.", {"type": "number", "minimum": 0, "maximum": 60, "default": 5}),
                 _q("after", "Seconds after t.", {"type": "number", "minimum": 0, "maximum": 60, "default": 10})],
                {"500": _ERROR, "503": _ERROR, "504": _ERROR}),
            "/api/media/{media_id}/artwork": media_get(
                "Cover art", "The recording's embedded cover (ID3, MP4, FLAC, Vorbis/Opus picture) or, for a "
                             "video without one, a frame at 10 % of its length, at most 480 px; extracted once "
                             "and cached. 404 when it has none. ETag and If-None-Match (304) are supported.",
                {f"image/{t}": {"schema": {"type": "string", "format": "binary"}} for t in ("jpeg", "png", "gif", "webp")},
                None, {"304": {"description": "Not modified (If-None-Match matched the ETag)"}}),
        },
    }
    for path, ops in spec["paths"].items():
        for op in ops.values():
            if op.get("security") != []:
                op["responses"].setdefault("401", _UNAUTHORIZED)
            if path.startswith("/api/"):
                op["responses"].setdefault("429", {"$ref": "#/components/responses/TooManyWrongTokens"})
    return spec
