"""Lung-RADS v2022 categories of screening-CT nodules, as tables: one row of data per row of the ACR table.

A nodule is described by :class:`NoduleFacts` (texture, mean diameter, solid component, calcification,
attachment, and its follow-up status against a prior scan); :func:`categorize` returns its category ("1", "2",
"3", "4A", "4B", "4X") and the row that applied; :func:`exam_category` gives the exam's category (the highest; "0"
when the lungs are not fully covered by the scan); :data:`MANAGEMENT` the management of each category.

Sizes. The mean diameter is the mean of the long and short axis, rounded to 0.1 mm before it is compared with a
threshold (:func:`lunglesionai.core.rounding.round_half_up`): 5.96 mm is 6.0 mm. Volumes are not used.

Growth (v2022): an increase of the mean diameter by more than :data:`GROWTH_MM` = 1.5 mm within
:data:`GROWTH_WINDOW_MONTHS` = 12 months (:func:`follow_up_status`). Growth over longer intervals is "slow
growth", which v2022 lists under 4B for solid and part-solid nodules ("growth over multiple screening exams").

What is implemented, row by row (the tables below hold the thresholds; the tests have one case per row):

* 1: nodules with benign calcification (``calcified``; complete, central, popcorn, concentric-ring or
  fat-containing in the table; the pipeline's HU rule finds dense calcification only).
* Solid: baseline < 6 → 2, 6 to < 8 → 3, 8 to < 15 → 4A, ≥ 15 → 4B; new < 4 → 2, 4 to < 6 → 3, 6 to < 8 → 4A,
  ≥ 8 → 4B; growing < 8 → 4A, ≥ 8 → 4B; slow-growing → 4B.
* Juxtapleural solid nodule < 10 mm at baseline or new, with smooth margins and an oval, lentiform or triangular
  shape → 2 (v2022 renamed perifissural to juxtapleural); the shape is a reader's call (``benign_juxtapleural_shape``).
  NOT checked: v2022 also asks for smooth margins and an oval, lentiform or triangular shape; the pipeline only
  knows that the nodule touches the pleura (``attachment``). The row is skipped when ``suspicious_features``.
* Part-solid: baseline < 6 mm total → 2; ≥ 6 mm with solid component < 6 → 3, 6 to < 8 → 4A, ≥ 8 → 4B; new
  < 6 mm total → 3; new or growing with solid component < 4 → 4A, ≥ 4 → 4B; slow-growing → 4B.
* Non-solid (ground-glass): < 30 mm at baseline, new or growing → 2; ≥ 30 mm at baseline or new → 3; ≥ 30 mm
  stable or slowly growing → 2. NOT in the table: a ground-glass nodule ≥ 30 mm that grows faster (> 1.5 mm in
  12 months) is given 3, the category of the baseline/new row (the reason says so).
* Stepped management (new in v2022), for stable or decreased solid and part-solid nodules: a category 3 nodule
  stable or decreased at its 6-month follow-up → 2; a category 4A nodule at its 3-month follow-up → 3. A 4B
  nodule stays 4B (v2022 returns it to 2 only when it is proven benign after diagnostic work-up, which a CT
  program cannot know). The prior category is ``prior_category`` when known (issue 16, prior comparison);
  otherwise the baseline row of the prior mean diameter (or of the current one) stands in for it, and the reason
  says so. The follow-up interval is not checked against the 3- and 6-month schedule.
* Size thresholds (v2022 note): a stable nodule that crossed into a higher size row since the prior scan is
  reclassified by size (baseline rows), even without growth by the 1.5 mm rule.
* 4X: a category 3, 4A or 4B nodule with additional features or findings that increase the suspicion of lung
  cancer (spiculation, lymphadenopathy, ...). The pipeline does not decide this: it comes in as the explicit
  ``suspicious_features`` flag.

NOT implemented (no input for them): category 0 for a prior CT being located or for findings suggesting
infection or inflammation (1-3-month follow-up); airway (endobronchial) nodules; atypical pulmonary cysts; the
"S" modifier (the caller adds it; :mod:`lunglesionai.clinical.read`); the 4B → 2 step after a benign work-up.

Sources:
    American College of Radiology, "Lung-RADS v2022" assessment categories table and its notes (released
    November 2022); summary and rationale: Christensen J, et al., "ACR Lung-RADS v2022: Assessment Categories
    and Management Recommendations", J Am Coll Radiol 2024;21(3):473-488, doi:10.1016/j.jacr.2023.09.009
    (also CHEST 2024;165(3):738-753). The rows above were checked against secondary copies of the v2022 table
    and notes (the ACR PDF itself was not available offline): the growth and size-threshold notes as quoted by a
    v2022 summary page, the v1.1 table (NCBI Bookshelf NBK568579, Appendix A Table 2) for the rows v2022 kept,
    and an independent open-source v2022 calculator (read, not copied). Management texts are paraphrased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

from lunglesionai.core.rounding import round_half_up

__all__ = [
    "ATTACHMENTS",
    "CATEGORIES",
    "FOLLOW_UP_STATUSES",
    "GROWTH_MM",
    "GROWTH_WINDOW_MONTHS",
    "JUXTAPLEURAL_MAX_MM",
    "MANAGEMENT",
    "TEXTURES",
    "NoduleFacts",
    "categorize",
    "category_rank",
    "exam_category",
    "follow_up_status",
]

CATEGORIES = ("0", "1", "2", "3", "4A", "4B", "4X")
"""Lung-RADS v2022 categories, lowest first ("0": incomplete, exam level only)."""
TEXTURES = ("solid", "part-solid", "ground-glass")
"""Nodule types of the table (ground-glass = non-solid)."""
FOLLOW_UP_STATUSES = ("baseline", "new", "growing", "slow-growing", "stable", "decreased")
"""``NoduleFacts.status``: first screening (no prior), new since the prior, growing (> 1.5 mm in ≤ 12 months),
slow-growing (growth over multiple exams, slower than that), stable, decreased."""
ATTACHMENTS = ("juxta-pleural", "none")
"""``NoduleFacts.attachment`` values (None: not determined)."""
GROWTH_MM = 1.5
"""Increase of the mean diameter (mm) above which a nodule is growing (Lung-RADS v2022)."""
GROWTH_WINDOW_MONTHS = 12.0
"""Interval (months) within which that increase counts as growth."""
JUXTAPLEURAL_MAX_MM = 10.0
"""Juxtapleural solid nodules below this mean diameter (mm) at baseline or new are category 2."""
SIZE_DECIMALS = 1
"""Lung-RADS v2022 rounds mean diameters to 0.1 mm."""
_INF = math.inf

# (mean diameter below, category, row): the first row whose bound exceeds the rounded mean diameter applies.
_SOLID_ROWS: dict[str, tuple[tuple[float, str, str], ...]] = {
    "baseline": ((6.0, "2", "solid < 6 mm at baseline"), (8.0, "3", "solid 6 to < 8 mm at baseline"),
                 (15.0, "4A", "solid 8 to < 15 mm at baseline"), (_INF, "4B", "solid ≥ 15 mm at baseline")),
    "new": ((4.0, "2", "new solid < 4 mm"), (6.0, "3", "new solid 4 to < 6 mm"), (8.0, "4A", "new solid 6 to < 8 mm"),
            (_INF, "4B", "new solid ≥ 8 mm")),
    "growing": ((8.0, "4A", "growing solid < 8 mm"), (_INF, "4B", "growing solid ≥ 8 mm")),
    "slow-growing": ((_INF, "4B", "slow-growing solid (growth over multiple screening exams)"),),
}
# (total mean diameter below, solid component below, category, row): first row with both bounds exceeded applies.
_PART_SOLID_ROWS: dict[str, tuple[tuple[float, float, str, str], ...]] = {
    "baseline": ((6.0, _INF, "2", "part-solid < 6 mm total at baseline"),
                 (_INF, 6.0, "3", "part-solid ≥ 6 mm, solid component < 6 mm, at baseline"),
                 (_INF, 8.0, "4A", "part-solid, solid component 6 to < 8 mm, at baseline"),
                 (_INF, _INF, "4B", "part-solid, solid component ≥ 8 mm, at baseline")),
    "new": ((6.0, _INF, "3", "new part-solid < 6 mm total"),
            (_INF, 4.0, "4A", "new part-solid, solid component < 4 mm"),
            (_INF, _INF, "4B", "new part-solid, solid component ≥ 4 mm")),
    "growing": ((_INF, 4.0, "4A", "growing part-solid, solid component < 4 mm"),
                (_INF, _INF, "4B", "growing part-solid, solid component ≥ 4 mm")),
    "slow-growing": ((_INF, _INF, "4B", "slow-growing part-solid (growth over multiple screening exams)"),),
}
_GGN_ROWS: dict[str, tuple[tuple[float, str, str], ...]] = {
    "baseline": ((30.0, "2", "non-solid < 30 mm at baseline"), (_INF, "3", "non-solid ≥ 30 mm at baseline")),
    "new": ((30.0, "2", "new non-solid < 30 mm"), (_INF, "3", "new non-solid ≥ 30 mm")),
    "growing": ((30.0, "2", "growing non-solid < 30 mm"),
                (_INF, "3", "growing non-solid ≥ 30 mm (not in the table: the baseline/new row is used)")),
    "slow-growing": ((30.0, "2", "slowly growing non-solid < 30 mm"),
                     (_INF, "2", "non-solid ≥ 30 mm, slowly growing")),
    "stable": ((30.0, "2", "stable non-solid < 30 mm"), (_INF, "2", "non-solid ≥ 30 mm, stable")),
    "decreased": ((30.0, "2", "decreased non-solid < 30 mm"), (_INF, "2", "non-solid ≥ 30 mm, decreased")),
}
# Stepped management: category at the prior scan → category when stable or decreased now.
_STEPPED = {"1": "2", "2": "2", "3": "2", "4A": "3", "4B": "4B", "4X": "4B"}
_STEP_REASON = {"1": "stable", "2": "stable category 2", "3": "category 3 stable or decreased at follow-up",
                "4A": "category 4A stable or decreased at follow-up",
                "4B": "category 4B stable (no step down without a benign work-up)",
                "4X": "category 4X stable (no step down without a benign work-up)"}

MANAGEMENT: dict[str, str] = {
    "0": "Incomplete: additional screening CT images and/or comparison with prior chest CT are needed before a "
         "category can be given.",
    "1": "Continue annual screening with low-dose CT in 12 months.",
    "2": "Continue annual screening with low-dose CT in 12 months.",
    "3": "Low-dose CT in 6 months.",
    "4A": "Low-dose CT in 3 months; PET/CT may be considered when there is a solid nodule or solid component of "
          "8 mm or more.",
    "4B": "Diagnostic chest CT with or without contrast, PET/CT (solid nodule or component of 8 mm or more), "
          "tissue sampling and/or referral for clinical evaluation, depending on the probability of malignancy "
          "and comorbidities.",
    "4X": "As 4B: diagnostic chest CT, PET/CT, tissue sampling and/or referral for clinical evaluation, depending "
          "on the probability of malignancy and comorbidities.",
}
"""Management of each category, paraphrased from the Lung-RADS v2022 table."""


@dataclass(frozen=True)
class NoduleFacts:
    """What Lung-RADS needs to know about one nodule.

    Args:
        texture: "solid", "part-solid" or "ground-glass" (non-solid).
        mean_diameter_mm: mean of the long and short axis (mm), unrounded.
        solid_component_mean_diameter_mm: mean diameter of the solid component (mm); required for part-solid.
        calcified: benign calcification (category 1).
        attachment: "juxta-pleural", "none", or None (not determined).
        status: one of :data:`FOLLOW_UP_STATUSES`; "baseline" without a prior scan.
        prior_mean_diameter_mm, prior_solid_component_mean_diameter_mm: sizes on the prior scan (mm), if known.
        interval_months: months since the prior scan, if known.
        suspicious_features: additional features that raise the suspicion of cancer (4X for categories 3-4B).
        benign_juxtapleural_shape: a reader confirmed the juxtapleural nodule's smooth margins and oval, lentiform
            or triangular shape. The v2022 juxtapleural row (category 2) needs it together with ``attachment``
            "juxta-pleural": the pipeline measures pleural contact, not shape or margins, so it never sets this and
            a pleura-touching solid nodule keeps its size category until a reader says so (the safe side).
        prior_category: the nodule's category on the prior scan ("1"-"4X"), if known (stepped management).

    Raises:
        ValueError: a value outside its list or range (non-positive or non-finite sizes, negative interval), or a
            part-solid nodule without its solid component.

    Example:
        >>> categorize(NoduleFacts("solid", 6.7))
        ('3', 'solid 6 to < 8 mm at baseline (6.7 mm)')
    """

    texture: str
    mean_diameter_mm: float
    solid_component_mean_diameter_mm: Optional[float] = None
    calcified: bool = False
    attachment: Optional[str] = None
    status: str = "baseline"
    prior_mean_diameter_mm: Optional[float] = None
    prior_solid_component_mean_diameter_mm: Optional[float] = None
    interval_months: Optional[float] = None
    suspicious_features: bool = False
    prior_category: Optional[str] = None
    benign_juxtapleural_shape: bool = False

    def __post_init__(self) -> None:
        _check_choice("texture", self.texture, TEXTURES)
        _check_choice("status", self.status, FOLLOW_UP_STATUSES)
        if self.attachment is not None:
            _check_choice("attachment", self.attachment, ATTACHMENTS)
        if self.prior_category is not None:
            _check_choice("prior_category", self.prior_category, CATEGORIES[1:])
        _check_size("mean_diameter_mm", self.mean_diameter_mm, positive=True)
        for name in ("solid_component_mean_diameter_mm", "prior_solid_component_mean_diameter_mm"):
            if getattr(self, name) is not None:
                _check_size(name, getattr(self, name), positive=False)
        if self.prior_mean_diameter_mm is not None:
            _check_size("prior_mean_diameter_mm", self.prior_mean_diameter_mm, positive=True)
        if self.interval_months is not None:
            _check_size("interval_months", self.interval_months, positive=False)
        if self.texture == "part-solid" and self.solid_component_mean_diameter_mm is None:
            raise ValueError("a part-solid nodule needs solid_component_mean_diameter_mm for Lung-RADS")
        for name in ("calcified", "suspicious_features"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NoduleFacts.{name} must be True or False, got {getattr(self, name)!r}")


def follow_up_status(mean_diameter_mm: float, prior_mean_diameter_mm: float, interval_months: float) -> str:
    """Growing, slow-growing, stable or decreased: the change of the rounded mean diameter since the prior scan.

    Growth is an increase of more than :data:`GROWTH_MM` within :data:`GROWTH_WINDOW_MONTHS`; the same increase
    over a longer interval is "slow-growing" (a single long interval stands in for v2022's "growth over multiple
    screening exams"); a decrease of more than :data:`GROWTH_MM` is "decreased" (our symmetric choice: Lung-RADS
    treats stable and decreased alike); anything else is "stable".

    Args:
        mean_diameter_mm, prior_mean_diameter_mm: mean diameters (mm) now and on the prior scan.
        interval_months: months between the scans (≥ 0).

    Raises:
        ValueError: a size that is not positive and finite, or a negative or non-finite interval.

    Example:
        >>> follow_up_status(7.6, 6.0, 12), follow_up_status(7.5, 6.0, 12), follow_up_status(9.0, 6.0, 24)
        ('growing', 'stable', 'slow-growing')
    """
    _check_size("mean_diameter_mm", mean_diameter_mm, positive=True)
    _check_size("prior_mean_diameter_mm", prior_mean_diameter_mm, positive=True)
    _check_size("interval_months", interval_months, positive=False)
    change = round_half_up(mean_diameter_mm, SIZE_DECIMALS) - round_half_up(prior_mean_diameter_mm, SIZE_DECIMALS)
    change = round_half_up(change, SIZE_DECIMALS)  # 7.6 - 6.0 is 1.5999999999999996 in floating point
    if change > GROWTH_MM:
        return "growing" if interval_months <= GROWTH_WINDOW_MONTHS else "slow-growing"
    return "decreased" if change < -GROWTH_MM else "stable"


def categorize(facts: NoduleFacts) -> tuple[str, str]:
    """The Lung-RADS v2022 category of one nodule and the table row that gave it.

    Args:
        facts: the nodule (see :class:`NoduleFacts`); sizes are rounded to 0.1 mm here.

    Returns:
        (category, reason): category one of "1", "2", "3", "4A", "4B", "4X"; reason a short statement of the
        row, with the rounded size, e.g. "new solid 4 to < 6 mm (5.0 mm)".

    Example:
        >>> categorize(NoduleFacts("part-solid", 9.0, solid_component_mean_diameter_mm=6.5))
        ('4A', 'part-solid, solid component 6 to < 8 mm, at baseline (9.0 mm, solid 6.5 mm)')
    """
    if facts.calcified:
        return "1", "benign calcification"
    category, reason = _table_category(facts)
    if facts.suspicious_features and category in ("3", "4A", "4B"):
        return "4X", f"{reason}; additional suspicious features (category {category} → 4X)"
    return category, reason


def category_rank(category: str) -> int:
    """Position of ``category`` in :data:`CATEGORIES` (0 for "0" up to 6 for "4X").

    Raises:
        ValueError: ``category`` is not a Lung-RADS category.
    """
    _check_choice("category", category, CATEGORIES)
    return CATEGORIES.index(category)


def exam_category(categories: Iterable[Optional[str]], lungs_fully_covered: Optional[bool]) -> str:
    """The exam's Lung-RADS category: "0" when the lungs are not fully covered, else the highest, "1" if none.

    Args:
        categories: the categories of the exam's nodules (None entries, nodules without a category, are skipped).
        lungs_fully_covered: False when part of the lungs is outside the scan or no lung was found ("0",
            incomplete); True or None (not determined) leave the category to the nodules.

    Raises:
        ValueError: an entry is not a category of a nodule ("1"-"4X").

    Example:
        >>> exam_category(["2", "4A", None, "3"], True), exam_category([], True), exam_category(["4B"], False)
        ('4A', '1', '0')
    """
    present = [c for c in categories if c is not None]
    for c in present:
        _check_choice("nodule category", c, CATEGORIES[1:])
    if lungs_fully_covered is False:
        return "0"
    return max(present, key=category_rank, default="1")


def _table_category(facts: NoduleFacts) -> tuple[str, str]:
    """Category and reason from the texture's rows (no calcification or 4X handling)."""
    mean = round_half_up(facts.mean_diameter_mm, SIZE_DECIMALS)
    if facts.texture == "ground-glass":
        category, row = _first_row(_GGN_ROWS[facts.status], mean)
        return category, f"{row} ({mean:.1f} mm)"
    if facts.status in ("stable", "decreased"):
        return _stepped(facts)
    if facts.texture == "solid":
        if (facts.attachment == "juxta-pleural" and facts.benign_juxtapleural_shape
                and facts.status in ("baseline", "new") and mean < JUXTAPLEURAL_MAX_MM
                and not facts.suspicious_features):
            return "2", f"juxtapleural solid < 10 mm, smooth and oval/lentiform/triangular per reader ({mean:.1f} mm)"
        category, row = _first_row(_SOLID_ROWS[facts.status], mean)
        return category, f"{row} ({mean:.1f} mm)"
    solid = round_half_up(facts.solid_component_mean_diameter_mm, SIZE_DECIMALS)
    category, row = _first_part_solid_row(_PART_SOLID_ROWS[facts.status], mean, solid)
    return category, f"{row} ({mean:.1f} mm, solid {solid:.1f} mm)"


def _stepped(facts: NoduleFacts) -> tuple[str, str]:
    """Stable or decreased solid / part-solid nodule: stepped management, or reclassification by size."""
    now, now_row = _baseline_size_category(facts.texture, facts.mean_diameter_mm,
                                           facts.solid_component_mean_diameter_mm)
    prior = None
    if facts.prior_mean_diameter_mm is not None and (facts.texture == "solid"
                                                     or facts.prior_solid_component_mean_diameter_mm is not None):
        prior, _ = _baseline_size_category(facts.texture, facts.prior_mean_diameter_mm,
                                           facts.prior_solid_component_mean_diameter_mm)
        if category_rank(now) > category_rank(prior):
            return now, f"{facts.status} but crossed into a higher size row: {now_row}"
    if facts.prior_category is not None:
        before, source = facts.prior_category, "prior category"
    elif prior is not None:
        before, source = prior, "prior category assumed from the prior size"
    else:
        before, source = now, "prior category assumed from the current size"
    after = _STEPPED[before]
    status = "decreased" if facts.status == "decreased" else "stable"
    return after, f"{_STEP_REASON[before]} ({status}; {source} {before})"


def _baseline_size_category(texture: str, mean_mm: float, solid_mm: Optional[float]) -> tuple[str, str]:
    """The baseline row of a solid or part-solid nodule of these sizes (rounded here)."""
    mean = round_half_up(mean_mm, SIZE_DECIMALS)
    if texture == "solid":
        category, row = _first_row(_SOLID_ROWS["baseline"], mean)
        return category, f"{row} ({mean:.1f} mm)"
    solid = round_half_up(solid_mm, SIZE_DECIMALS)
    category, row = _first_part_solid_row(_PART_SOLID_ROWS["baseline"], mean, solid)
    return category, f"{row} ({mean:.1f} mm, solid {solid:.1f} mm)"


def _first_row(rows: tuple[tuple[float, str, str], ...], mean: float) -> tuple[str, str]:
    return next((category, row) for below, category, row in rows if mean < below)


def _first_part_solid_row(rows, mean: float, solid: float) -> tuple[str, str]:
    return next((category, row) for total_below, solid_below, category, row in rows
                if mean < total_below and solid < solid_below)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Lung-RADS {name} must be one of {choices}, got {value!r}")


def _check_size(name: str, value, *, positive: bool) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"Lung-RADS {name} must be a finite number {'> 0' if positive else '≥ 0'}, got {value!r}")
