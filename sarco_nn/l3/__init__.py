"""Automatic L3 slice localization: vertebra-label rules, a learned MIP localizer, TotalSegmentator.

`locate.locate_l3` is the one entry point; `choose.choose_slice` / `choose.load_l3_slice` are what
`sarco predict` calls (user override > CSV > locator). Heavy imports (torch, matplotlib) happen inside
functions, so importing this package is cheap.
"""

from sarco_nn.l3.result import L3Location, L3NotFound

__all__ = ["L3Location", "L3NotFound"]
