"""Tests of lunglesionai.clinical.lung_rads: one case per row of the ACR Lung-RADS v2022 table, plus boundaries.

Expected categories are read from the Lung-RADS v2022 assessment categories table (ACR, November 2022; rows as
summarised by Christensen et al., J Am Coll Radiol 2024;21:473-488), not from the module's own tables.
"""

import pytest

from lunglesionai.clinical.lung_rads import (
    CATEGORIES,
    MANAGEMENT,
    NoduleFacts,
    categorize,
    category_rank,
    exam_category,
    follow_up_status,
)

SOLID_ROWS = [
    # (status, mean diameter mm, category)   row of the table
    ("baseline", 5.9, "2"),  # 2: solid < 6 mm at baseline
    ("baseline", 6.0, "3"),  # 3: solid >= 6 to < 8 mm at baseline
    ("baseline", 7.9, "3"),
    ("baseline", 8.0, "4A"),  # 4A: solid >= 8 to < 15 mm at baseline
    ("baseline", 14.9, "4A"),
    ("baseline", 15.0, "4B"),  # 4B: solid >= 15 mm at baseline
    ("new", 3.9, "2"),  # 2: new < 4 mm
    ("new", 4.0, "3"),  # 3: new 4 to < 6 mm
    ("new", 5.9, "3"),
    ("new", 6.0, "4A"),  # 4A: new 6 to < 8 mm
    ("new", 7.9, "4A"),
    ("new", 8.0, "4B"),  # 4B: new or growing >= 8 mm
    ("growing", 7.9, "4A"),  # 4A: growing < 8 mm
    ("growing", 8.0, "4B"),  # 4B: new or growing >= 8 mm
    ("slow-growing", 5.0, "4B"),  # 4B: slow growing solid nodule over multiple screening exams
]
PART_SOLID_ROWS = [
    # (status, total mean mm, solid component mean mm, category)
    ("baseline", 5.9, 3.0, "2"),  # 2: part-solid < 6 mm total mean diameter at baseline
    ("baseline", 6.0, 5.9, "3"),  # 3: >= 6 mm total with solid component < 6 mm
    ("baseline", 12.0, 6.0, "4A"),  # 4A: solid component >= 6 to < 8 mm at baseline
    ("baseline", 12.0, 7.9, "4A"),
    ("baseline", 12.0, 8.0, "4B"),  # 4B: solid component >= 8 mm at baseline
    ("new", 5.9, 3.0, "3"),  # 3: new < 6 mm total mean diameter
    ("new", 6.0, 3.9, "4A"),  # 4A: new or growing solid component < 4 mm
    ("new", 10.0, 4.0, "4B"),  # 4B: new or growing solid component >= 4 mm
    ("growing", 10.0, 3.9, "4A"),
    ("growing", 10.0, 4.0, "4B"),
    ("slow-growing", 10.0, 2.0, "4B"),  # 4B: slow growing part-solid nodule
]
GROUND_GLASS_ROWS = [
    # (status, mean mm, category)
    ("baseline", 29.9, "2"),  # 2: non-solid < 30 mm at baseline, new or growing
    ("new", 29.9, "2"),
    ("growing", 29.9, "2"),
    ("baseline", 30.0, "3"),  # 3: non-solid >= 30 mm at baseline or new
    ("new", 30.0, "3"),
    ("stable", 45.0, "2"),  # 2: >= 30 mm stable or slowly growing
    ("slow-growing", 45.0, "2"),
    ("decreased", 45.0, "2"),
    ("growing", 30.0, "3"),  # not in the table: kept at the baseline/new row's 3 (documented)
]


@pytest.mark.parametrize("status, mean, expected", SOLID_ROWS)
def test_solid_rows(status, mean, expected):
    category, reason = categorize(NoduleFacts("solid", mean, status=status))
    assert category == expected, reason


@pytest.mark.parametrize("status, mean, solid, expected", PART_SOLID_ROWS)
def test_part_solid_rows(status, mean, solid, expected):
    category, reason = categorize(NoduleFacts("part-solid", mean, solid_component_mean_diameter_mm=solid,
                                              status=status))
    assert category == expected, reason


@pytest.mark.parametrize("status, mean, expected", GROUND_GLASS_ROWS)
def test_ground_glass_rows(status, mean, expected):
    category, reason = categorize(NoduleFacts("ground-glass", mean, status=status))
    assert category == expected, reason


@pytest.mark.parametrize(
    "mean, expected",
    [(5.94, "2"), (5.95, "3"), (7.949, "3"), (7.95, "4A"), (14.95, "4B")],  # v2022: mean rounded to 0.1 mm first
)
def test_sizes_are_rounded_to_a_tenth_of_a_mm_before_the_thresholds(mean, expected):
    assert categorize(NoduleFacts("solid", mean))[0] == expected


def test_solid_component_is_rounded_too():
    facts = NoduleFacts("part-solid", 10.0, solid_component_mean_diameter_mm=5.95)
    assert categorize(facts)[0] == "4A"  # 6.0 mm solid component


@pytest.mark.parametrize("texture", ["solid", "part-solid", "ground-glass"])
def test_benign_calcification_is_category_1(texture):
    # 1: nodules with specific (benign) calcification, whatever their size
    facts = NoduleFacts(texture, 20.0, solid_component_mean_diameter_mm=10.0, calcified=True)
    assert categorize(facts) == ("1", "benign calcification")


@pytest.mark.parametrize(
    "status, mean, attachment, shape, suspicious, expected",
    [
        ("baseline", 9.9, "juxta-pleural", True, False, "2"),  # 2: juxtapleural solid < 10 mm, benign shape
        ("new", 9.9, "juxta-pleural", True, False, "2"),  # ... or new
        ("baseline", 9.9, "juxta-pleural", False, False, "4A"),  # pleural contact alone: shape not confirmed
        ("baseline", 10.0, "juxta-pleural", True, False, "4A"),  # not below 10 mm: ordinary solid row
        ("baseline", 9.9, "none", True, False, "4A"),
        ("baseline", 9.9, None, True, False, "4A"),
        ("growing", 7.0, "juxta-pleural", True, False, "4A"),  # the row is for baseline or new only
        ("baseline", 9.9, "juxta-pleural", True, True, "4X"),  # suspicious: not a benign-looking juxtapleural nodule
    ],
)
def test_juxtapleural_row(status, mean, attachment, shape, suspicious, expected):
    facts = NoduleFacts("solid", mean, attachment=attachment, status=status, suspicious_features=suspicious,
                        benign_juxtapleural_shape=shape)
    assert categorize(facts)[0] == expected


def test_juxtapleural_row_is_for_solid_nodules_only():
    facts = NoduleFacts("part-solid", 9.0, solid_component_mean_diameter_mm=7.0, attachment="juxta-pleural")
    assert categorize(facts)[0] == "4A"


@pytest.mark.parametrize(
    "texture, mean, solid, expected",
    [
        ("solid", 7.0, None, "4X"),  # 3 -> 4X
        ("solid", 10.0, None, "4X"),  # 4A -> 4X
        ("solid", 20.0, None, "4X"),  # 4B -> 4X
        ("solid", 5.0, None, "2"),  # 4X is for category 3 or 4 nodules only
        ("part-solid", 12.0, 8.0, "4X"),
        ("ground-glass", 10.0, None, "2"),
    ],
)
def test_4x_needs_the_explicit_suspicious_flag_and_a_category_3_or_4(texture, mean, solid, expected):
    facts = NoduleFacts(texture, mean, solid_component_mean_diameter_mm=solid, suspicious_features=True)
    assert categorize(facts)[0] == expected
    assert categorize(NoduleFacts(texture, mean, solid_component_mean_diameter_mm=solid))[0] != "4X"


@pytest.mark.parametrize(
    "prior_category, status, expected",
    [
        ("4A", "stable", "3"),  # v2022: category 4A stable or decreased at 3-month follow-up -> 3
        ("4A", "decreased", "3"),
        ("3", "stable", "2"),  # category 3 stable or decreased at 6-month follow-up -> 2
        ("3", "decreased", "2"),
        ("4B", "stable", "4B"),  # 4B -> 2 only when proven benign after work-up: not stepped
        ("2", "stable", "2"),
    ],
)
def test_stepped_management_from_the_prior_category(prior_category, status, expected):
    facts = NoduleFacts("solid", 9.0, status=status, prior_category=prior_category)
    category, reason = categorize(facts)
    assert category == expected, reason
    assert "prior category" in reason


def test_stepped_management_for_part_solid_nodules():
    facts = NoduleFacts("part-solid", 9.0, solid_component_mean_diameter_mm=7.0, status="stable", prior_category="4A")
    assert categorize(facts)[0] == "3"


def test_without_a_prior_category_the_prior_size_stands_in():
    # 9.5 mm at the prior scan was a baseline 4A; stable now -> 3, and the reason says it was assumed
    category, reason = categorize(NoduleFacts("solid", 9.8, status="stable", prior_mean_diameter_mm=9.5))
    assert category == "3"
    assert "assumed from the prior size" in reason
    category, reason = categorize(NoduleFacts("solid", 7.0, status="stable"))
    assert category == "2" and "assumed from the current size" in reason


def test_a_stable_nodule_that_crossed_a_size_threshold_is_reclassified_by_size():
    # v2022 note: crossing into a higher size category reclassifies even without growth by the 1.5 mm rule
    category, reason = categorize(NoduleFacts("solid", 8.1, status="stable", prior_mean_diameter_mm=7.5,
                                              prior_category="3"))
    assert category == "4A"
    assert "crossed" in reason
    category, _ = categorize(NoduleFacts("solid", 7.9, status="stable", prior_mean_diameter_mm=7.5,
                                         prior_category="3"))
    assert category == "2"


@pytest.mark.parametrize(
    "now, prior, months, expected",
    [
        (7.6, 6.0, 12, "growing"),  # +1.6 mm within 12 months: growth (> 1.5 mm)
        (7.5, 6.0, 12, "stable"),  # +1.5 mm is not more than 1.5 mm
        (7.6, 6.0, 13, "slow-growing"),  # growth over more than 12 months
        (6.0, 6.0, 3, "stable"),
        (4.4, 6.0, 6, "decreased"),
        (4.5, 6.0, 6, "stable"),
    ],
)
def test_follow_up_status_uses_the_1_5_mm_in_12_months_rule(now, prior, months, expected):
    assert follow_up_status(now, prior, months) == expected


@pytest.mark.parametrize(
    "categories, covered, expected",
    [
        (["2", "4A", "3"], True, "4A"),  # the exam category is the highest nodule category
        (["3", "4X", "4B"], True, "4X"),
        (["4A", "4B"], None, "4B"),  # coverage not determined: left to the nodules
        ([], True, "1"),  # no nodules: 1 (negative)
        ([None, "2"], True, "2"),
        (["4B"], False, "0"),  # part of the lungs not covered: 0 (incomplete)
        ([], False, "0"),
    ],
)
def test_exam_category(categories, covered, expected):
    assert exam_category(categories, covered) == expected


def test_categories_are_ordered_and_every_one_has_a_management_text():
    assert [category_rank(c) for c in CATEGORIES] == list(range(len(CATEGORIES)))
    assert set(MANAGEMENT) == set(CATEGORIES)
    assert "6 months" in MANAGEMENT["3"] and "3 months" in MANAGEMENT["4A"] and "12 months" in MANAGEMENT["2"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"texture": "mixed", "mean_diameter_mm": 5.0}, "texture"),
        ({"texture": "solid", "mean_diameter_mm": 0.0}, "mean_diameter_mm"),
        ({"texture": "solid", "mean_diameter_mm": float("nan")}, "mean_diameter_mm"),
        ({"texture": "solid", "mean_diameter_mm": 5.0, "status": "old"}, "status"),
        ({"texture": "solid", "mean_diameter_mm": 5.0, "attachment": "fissural"}, "attachment"),
        ({"texture": "solid", "mean_diameter_mm": 5.0, "prior_category": "0"}, "prior_category"),
        ({"texture": "solid", "mean_diameter_mm": 5.0, "interval_months": -1.0}, "interval_months"),
        ({"texture": "part-solid", "mean_diameter_mm": 8.0}, "solid_component"),
        ({"texture": "solid", "mean_diameter_mm": 5.0, "calcified": None}, "calcified"),
    ],
)
def test_bad_facts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoduleFacts(**kwargs)


def test_exam_category_refuses_unknown_categories():
    with pytest.raises(ValueError):
        exam_category(["5"], True)
    with pytest.raises(ValueError):
        exam_category(["0"], True)  # "0" is an exam category, not a nodule's
