"""A rule on a path of an app that routes paths whatever their case (Express, Koa, ASP.NET Core):
the documented guard, a regex that ignores case, leaves no spelling of the path past it."""

from __future__ import annotations

import pytest

from tests.net.test_rules_edge import PATHS, harness, request, rules  # noqa: F401 (harness: a fixture)
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


@pytest.mark.parametrize("via", PATHS)
async def test_a_path_regex_that_ignores_case_guards_every_spelling_of_the_path(harness, local, via):  # noqa: F811
    port, state = local
    await harness.start(str(port), rules=rules({"match": 'path:~"(?i)^/admin"', "action": "basic-auth",
                                                "users": ["admin:s3cret"]}))
    for target in ["/admin", "/ADMIN", "/Admin/secret", "/%41dmin", "/x/../aDmIn"]:
        assert (await request(harness, target, via=via))[0] == 401, target
    assert (await request(harness, "/administrators-guide", via=via))[0] == 401  # a prefix, as path:/admin
    assert (await request(harness, "/echo", via=via))[0] != 401
    assert state.seen_targets == [b"/echo"]
