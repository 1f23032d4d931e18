"""Properties of the WHM username rules over generated domains (hypothesis), beyond the listed examples.

Exactly-once provisioning leans on them: every name hostq may send to createacct must be one WHM accepts
(integrations.md: <= 16 characters, no leading digit, not starting with `test`), the names tried for one domain
must differ in their first 8 characters (WHM's uniqueness), and the family read after a lost race must cover
every candidate, or a job would retry a name it should have skipped.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.provisioning.rules import (
    UNIQUE_PREFIX, choose_username, username_candidates, username_family, username_problem, valid_domain)

_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
_DOMAIN = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(_LABEL, min_size=1, max_size=3),
                    st.sampled_from(["com", "com.br", "net", "io", "org"])).filter(valid_domain)


@settings(max_examples=300, deadline=None)
@given(_DOMAIN)
def test_candidates_are_names_whm_takes_distinct_in_their_first_8_and_of_one_family(domain):
    family = username_family(domain)
    firsts = list(itertools.islice(username_candidates(domain), 1200))
    for name in firsts:
        assert len(name) <= 16 and name[0].isalpha() and not name.startswith("test"), (domain, name)
        assert name.startswith(family), (domain, name, family)
    prefixes = [name[:UNIQUE_PREFIX] for name in firsts]
    assert len(set(prefixes)) == len(prefixes), domain


@settings(max_examples=200, deadline=None)
@given(_DOMAIN, st.integers(min_value=0, max_value=40))
def test_the_chosen_name_is_acceptable_and_free_whatever_is_taken(domain, taken_count):
    taken = {name[:UNIQUE_PREFIX] for name in itertools.islice(username_candidates(domain), taken_count)}
    chosen = choose_username(domain, taken)
    assert username_problem(chosen) is None, (domain, chosen)
    assert chosen[:UNIQUE_PREFIX] not in taken, (domain, chosen, taken)
