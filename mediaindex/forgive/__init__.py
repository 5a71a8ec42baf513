"""Search that forgives: typos, sound-alike names, numbers, spelling variants, compounds.

The index backend asks :func:`mediaindex.forgive.query.expand` for the alternatives of a
parsed query; each query position becomes an :class:`~mediaindex.forgive.query.AnyOf` of the
word as typed and the index words it may stand for. Hits that match the words as typed always
rank above hits found only through an alternative.

- :mod:`.vocab`: the index's own vocabulary in memory (typo and sounds-like candidates).
- :mod:`.numbers`: digits <-> number words (English).
- :mod:`.spelling`: British/American spellings, hyphens, apostrophes, split/joined compounds.
- :mod:`.query`: query syntax (phrases, prefix, ``-word``, ``OR``) and the expansion itself.
"""
