"""MyPage on Redis (MYPAGE_DB_URI=redis://...), the other services on SQLite:
the stories of tests/e2e/test_story.py that MyPage takes part in, plus three
MyPage replicas racing on the same views (WATCH/MULTI/EXEC).

Skipped when no Redis answers (see servers.py). The keys carry a prefix of
their own and are deleted afterwards."""
import os

import pytest
import redis

from e2e import test_story as story
from helpers import eventually
from servers import REDIS, redis_prefix, require_redis, running_system
from views_story import mypage_replicas_agree_with_the_reservations

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    require_redis()
    with redis_prefix() as (uri, prefix):
        with running_system(tmp_path_factory.mktemp("redis-system"), {"MYPAGE_DB_URI": uri}) as cluster:
            cluster.redis_prefix = prefix
            yield cluster


test_stock_reserve_confirm_ship_deliver_return_cancel = story.test_stock_reserve_confirm_ship_deliver_return_cancel
test_customers_see_only_their_own_reservations = story.test_customers_see_only_their_own_reservations
test_mypage_catches_up_after_being_down = story.test_mypage_catches_up_after_being_down


def test_the_views_are_in_redis_not_in_sql(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    eventually(lambda: library.mypage(library.alice).get(reservation["id"]))
    client = redis.Redis.from_url(REDIS)
    try:
        assert client.exists(f"{system.redis_prefix}:view:{reservation['id']}")
        assert client.zscore(f"{system.redis_prefix}:customer:alice", reservation["id"]) is not None
    finally:
        client.close()
    assert not os.path.exists(os.path.join(system.state_dir, "data", "mypage.db"))


def test_three_mypage_replicas_on_redis(system, library):
    mypage_replicas_agree_with_the_reservations(system, library, replicas=3)
