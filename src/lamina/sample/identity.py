"""Synthetic, obviously fake patient and specimen identities for sample slides.

The names are common French surnames and first names, the patient IDs carry
a ``SYN`` prefix and the laboratory is a fictitious one, so nobody mistakes a
sample for real patient data. Every value is a plain ASCII string so that it
fits DICOM ``PN``/``LO``/``DA`` value representations and TIFF descriptions.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from lamina.archive.manifest import IDENTITY_KEYS

__all__ = ["LAB_NAME", "MANIFEST_FIELDS", "ORGAN_SNOMED", "Identity", "make_identity"]

LAB_NAME = "LABO LAMINA DEMO - ANAPATH"
"""Fictitious pathology laboratory printed on every label."""

MANIFEST_FIELDS: tuple[str, ...] = IDENTITY_KEYS
"""Identity columns of ``manifest.csv``, after the ``file`` column."""

_SURNAMES = (
    "DUPONT", "MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD",
    "PETIT", "DURAND", "LEROY", "MOREAU", "SIMON", "LAURENT", "LEFEBVRE",
    "MICHEL", "GARCIA", "DAVID", "BERTRAND", "ROUX", "VINCENT", "FOURNIER",
    "MOREL", "GIRARD", "ANDRE", "MERCIER", "BLANC", "GUERIN", "BOYER",
)  # fmt: skip
_FEMALE = (
    "MARIE", "JEANNE", "FRANCOISE", "MONIQUE", "CATHERINE", "NATHALIE",
    "ISABELLE", "SYLVIE", "CHRISTINE", "MARTINE", "CLAIRE", "CAMILLE",
)  # fmt: skip
_MALE = (
    "JEAN", "PIERRE", "MICHEL", "ANDRE", "PHILIPPE", "ALAIN", "BERNARD",
    "JACQUES", "PATRICK", "DANIEL", "NICOLAS", "LOUIS",
)  # fmt: skip
_STAINS = ("HE", "HE", "PAS", "Masson trichrome")
_SPECIMEN_TYPES = ("biopsy", "resection")
# Organ, a plausible ICD-O-3 morphology code for a tumour there, SNOMED CT code of the organ.
_ORGANS = (
    ("Colon", "8140/3", "71854001"),  # adenocarcinoma NOS
    ("Kidney", "8312/3", "64033007"),  # renal cell carcinoma
    ("Breast", "8500/3", "76752008"),  # infiltrating duct carcinoma
    ("Lung", "8070/3", "39607008"),  # squamous cell carcinoma
    ("Prostate", "8140/3", "41216001"),
    ("Skin", "8720/3", "39937001"),  # malignant melanoma
    ("Liver", "8170/3", "10200004"),  # hepatocellular carcinoma
    ("Stomach", "8490/3", "69695003"),  # signet ring cell carcinoma
)
ORGAN_SNOMED: dict[str, str] = {organ: snomed for organ, _, snomed in _ORGANS}
"""SNOMED CT concept of each organ an identity can have."""


@dataclass(frozen=True)
class Identity:
    """Identity of one synthetic slide: the patient, the case and the specimen.

    Attributes
    ----------
    patient_id : str
        Fake patient identifier, e.g. ``"SYN0412345"``.
    patient_name : str
        DICOM PN style ``"SURNAME^FIRSTNAME"``.
    birth_date : str
        ``YYYYMMDD``.
    sex : str
        ``"F"`` or ``"M"``.
    accession_number : str
        Case number, e.g. ``"S26-00123"``.
    specimen_id : str
        Slide (container) identifier, e.g. ``"S26-00123-A1"``.
    stain : str
        ``"HE"``, ``"PAS"`` or ``"Masson trichrome"``.
    organ : str
        Organ the specimen comes from, e.g. ``"Colon"``.
    diagnosis_code : str
        ICD-O-3 morphology code, e.g. ``"8140/3"``.
    specimen_type : str
        ``"biopsy"`` or ``"resection"`` (for retention rules).
    """

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    specimen_id: str
    stain: str
    organ: str
    diagnosis_code: str
    specimen_type: str = "biopsy"

    def as_dict(self) -> dict[str, str]:
        """Return the identity as a ``{manifest column: value}`` mapping.

        Returns
        -------
        dict of str to str
            One entry per name in :data:`MANIFEST_FIELDS`.
        """
        return {key: str(value) for key, value in asdict(self).items()}

    @property
    def surname(self) -> str:
        """Patient surname (the part of the name before ``^``)."""
        return self.patient_name.split("^")[0]

    @property
    def given_name(self) -> str:
        """Patient first name (the part of the name after ``^``)."""
        return self.patient_name.split("^")[-1]


def make_identity(seed: int, index: int) -> Identity:
    """Draw the identity of sample ``index`` for a given ``seed``.

    Parameters
    ----------
    seed : int
        Seed of the whole sample set.
    index : int
        Position of the sample in the set; different indexes give different
        patients and case numbers.

    Returns
    -------
    Identity
        The same identity for the same ``(seed, index)``.
    """
    rng = random.Random(f"lamina-sample-{seed}-{index}")
    sex = rng.choice("FM")
    given = rng.choice(_FEMALE if sex == "F" else _MALE)
    year = rng.randint(1938, 1995)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    case = 100 + index * 37 + rng.randint(0, 36)
    accession = f"S26-{case:05d}"
    block = rng.choice("ABC")
    organ, code, _ = _ORGANS[(seed + index) % len(_ORGANS)]
    return Identity(
        patient_id=f"SYN{rng.randint(0, 9_999_999):07d}",
        patient_name=f"{rng.choice(_SURNAMES)}^{given}",
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        sex=sex,
        accession_number=accession,
        specimen_id=f"{accession}-{block}{rng.randint(1, 3)}",
        stain=_STAINS[index % len(_STAINS)],
        organ=organ,
        diagnosis_code=code,
        specimen_type=_SPECIMEN_TYPES[(seed + index) % len(_SPECIMEN_TYPES)],
    )
