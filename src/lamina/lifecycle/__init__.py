"""The care lifecycle: how long a care slide is kept after its case's final report, when it moves
to the cold tier, and what its trace keeps once expired.

- :mod:`.rules`: :class:`~.rules.Rule` and :class:`~.rules.RuleSet`, a lab's retention rules,
  parsed from TOML (:func:`~.rules.parse_rules`, :func:`~.rules.load_rules`).
- :mod:`.evaluate`: :func:`~.evaluate.evaluate`, the one pure function that says what is due for
  a slide (:class:`~.evaluate.SlideFacts`) under a rule set, and why (:class:`~.evaluate.Outcome`).

The format of the rules and the order of precedence (hold, interest, report) are in
``docs/lifecycle.md``.
"""
