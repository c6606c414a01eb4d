#!/usr/bin/env python3
"""Copies bench-results/latest.md into the README's "Latest results" section (`make readme-results`).

The section's text between the markers `<!-- results:begin -->` and `<!-- results:end -->` is
replaced; the report's headings move one level down to sit under the README's own.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
latest = (root / "bench-results" / "latest.md").read_text()
# A --quick or one-suite run writes latest.md too, and says so (Report.swift): not for the README.
if "\n**Not a full run" in latest:
    sys.exit("bench-results/latest.md is from a --quick or one-suite run, not a full `make bench`")
latest = re.sub(r"\A# .*\n+", "", latest)  # the report's title: the README has its own
latest = re.sub(r"^## ", "### ", latest, flags=re.M)
readme_path = root / "README.md"
readme = readme_path.read_text()
begin, end = "<!-- results:begin -->\n", "<!-- results:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md has no results markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
readme_path.write_text(head + begin + "\n" + latest.strip() + "\n\n" + end + tail)
print("README.md: results from bench-results/latest.md")
