"""Who may do what: the labs (tenants, by FINESS number), the people and the roles they hold in
each lab, the grants a lab gives on its slides, sign-in (bearer tokens), and the one decision every
route and DICOM service asks for.

- :mod:`.roles`: :class:`Role`, the roles a person holds in a tenant.
"""

from lamina.governance.roles import Role

__all__ = ["Role"]
