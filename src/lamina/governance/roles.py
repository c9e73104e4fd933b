"""The roles a person holds in a tenant (a lab), as the report on digital pathology names them."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A role held in one tenant; a person may hold several, in several tenants."""

    #: reads and annotates the lab's slides, signs out cases
    PATHOLOGIST = "pathologist"
    #: ingests and checks the lab's slides
    TECHNICIAN = "technician"
    #: manages the lab's rules, people and grants
    LAB_ADMIN = "lab_admin"
    #: operates storage (fixity, tiers, deletion rules); sees no pixels it is not granted
    ARCHIVIST = "archivist"
    #: reads what a committee-approved project is granted
    RESEARCHER = "researcher"
    #: reviews research projects' requests
    COMMITTEE_MEMBER = "committee_member"
    #: operates the platform: tenants, issuers, nodes; sees no pixels it is not granted
    PLATFORM_ADMIN = "platform_admin"
