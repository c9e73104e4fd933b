"""The storage report: volume per tier and per lab, intake and expiry per month, slides of interest,
the projected volume, and its cost in euros and CO2 (``report``), with its plots (``plots``).
``docs/reporting.md`` describes what is counted and how the projection is made."""

from lamina.reporting.report import (
    GLASS_SLIDE_KG_CO2,
    PROJECTION_METHOD,
    LabVolume,
    Month,
    Projection,
    StorageReport,
    Volume,
    storage_report,
)

__all__ = [
    "GLASS_SLIDE_KG_CO2",
    "PROJECTION_METHOD",
    "LabVolume",
    "Month",
    "Projection",
    "StorageReport",
    "Volume",
    "storage_report",
]
