"""Search that forgives: typos, sound-alike names, numbers, spelling variants, compounds.

The embedded index asks :func:`mediaindex.forgive.query.expand` for the alternatives of a
parsed query (other backends get them from :mod:`.layer`); each query position becomes an
:class:`~mediaindex.forgive.query.AnyOf` of the word as typed and the index words it may stand
for. Hits that match the words as typed always rank above hits found only through an alternative.

- :mod:`.vocab`: the index's own vocabulary in memory (typo and sounds-like candidates).
- :mod:`.numbers`: digits <-> number words (English).
- :mod:`.spelling`: British/American spellings, hyphens, apostrophes, split/joined compounds.
- :mod:`.query`: query syntax (phrases, prefix, ``-word``, ``OR``) and the expansion itself.
- :mod:`.wordbook`: the library's words kept by the core, for a backend that cannot list its own.
- :mod:`.layer`: the core's forgiving in front of a backend that forgives less (Meilisearch:
  numbers, spellings and sound-alike names ORed into the query it gets).
"""
