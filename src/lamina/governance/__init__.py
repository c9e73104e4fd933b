"""Who may do what: the labs (tenants, by FINESS number), the people and the roles they hold in
each lab, the grants a lab gives on its slides, sign-in (bearer tokens), and the one decision every
route and DICOM service asks for.

- :mod:`.roles`: :class:`Role`, the roles a person holds in a tenant.
- :mod:`.oidc`: :class:`IssuerConfig`, a trusted OpenID provider, and its keys.
- :mod:`.tokens`: :class:`TokenValidator`, bearer tokens checked and cached, and their :class:`Claims`.
- :mod:`.claims`: :class:`ClaimsMapping`, claims to the person and their roles per tenant
  (:class:`Identity`, :class:`Membership`).
"""

from lamina.governance.claims import ClaimsMapping, Identity, Membership
from lamina.governance.oidc import IssuerConfig
from lamina.governance.roles import Role
from lamina.governance.tokens import Claims, TokenValidator

__all__ = ["Claims", "ClaimsMapping", "Identity", "IssuerConfig", "Membership", "Role", "TokenValidator"]
