"""The one report module: tables, numbers and file-name slugs every report shares."""

import math

from medveil._files import slug
from medveil.evaluation.report import html_table, markdown_table, mean_std, number, pm
from medveil.schemes import Setting


def test_numbers_read_the_same_in_every_report():
    assert pm(mean_std([0.5, 0.7]), 100, 1) == "60.0 ± 10.0"
    assert pm(mean_std([0.5]), 100, 1) == "50.0"  # one run has no spread to show
    assert pm(mean_std([])) == "–" and number("") == "–" and number(math.nan) == "–"
    assert number(float("inf")) == "∞" and number("0.12345") == "0.123"


def test_tables_escape_what_would_break_them():
    lines = markdown_table([["a", "b"], ["x|y", 3]])
    assert lines == ["| a | b |", "|---|---|", "| x/y | 3 |"]
    assert "&lt;script&gt;" in html_table([["h"], ["<script>"]])


def test_one_slug_per_setting_and_file():
    assert Setting("intensity", (("bits", 8), ("levels", 50))).slug == "intensity-bits8-levels50"
    assert Setting("skk").slug == "skk"
    assert slug("br35h", "skk", "chosen-plaintext+unet", "prior") == "br35h-skk-chosen-plaintext-unet-prior"
    assert "/" not in slug("../etc", "a b")
