"""Author-year labels in the bibliography, matching the author-year citations in the
text.

sphinxcontrib-bibtex cites as "Song et al. (2024)" (``bibtex_reference_style:
author_year``), but its list labels come from a pybtex style ("alpha": ``[SHZ+24]``).
This registers the pybtex style ``author_year``: entries sorted by author and year,
labelled "Song et al. 2024".
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    return " ".join(person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    """'Smith 2020', 'Smith and Jones 2020', 'Smith et al. 2020'."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            if not people:
                names = entry.fields.get("title", entry.key)
            elif len(people) == 1:
                names = _last_name(people[0])
            elif len(people) == 2:
                names = f"{_last_name(people[0])} and {_last_name(people[1])}"
            else:
                names = f"{_last_name(people[0])} et al."
            yield f"{names} {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
