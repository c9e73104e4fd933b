"""Slides of interest leaving the lab: de-identification, pseudonymisation, patients' opposition
and the push to an archive node (``role = "archive"``).

- :mod:`.keys`: the site's secret keys (its own, and one per health-data warehouse it links with)
  and what is derived from them: pseudonyms, replacement UIDs, each patient's date offset.
- :mod:`.consent`: patients' opposition to research use (recorded at a site, withdrawn at the
  archive).
- :mod:`.pseudonyms`: the site's correspondence of the pseudonyms it sent, and its resolution by
  a lab admin.
"""
