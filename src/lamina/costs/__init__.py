"""The report's cost model as a calculator: investment, operation, archive, per slide, storage CO2.

``model`` is pure (inputs and prices in, figures out); ``measured`` reads a live archive's own
volumes (slides a year, GB a slide) from its catalog. ``docs/costs.md`` describes both.
"""

from lamina.costs.model import (
    PRIVATE_500K_CASES,
    PUBLIC_SECTOR,
    CostInputs,
    CostResult,
    Sector,
    UnitPrices,
    estimate,
)

__all__ = [
    "PRIVATE_500K_CASES",
    "PUBLIC_SECTOR",
    "CostInputs",
    "CostResult",
    "Sector",
    "UnitPrices",
    "estimate",
]
