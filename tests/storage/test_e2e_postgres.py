"""The whole system on PostgreSQL, a database per service: the key stories of
tests/e2e/test_story.py (the story, the 40-for-5 race, three delivery
replicas), run again here, plus three product and MyPage replicas.

Skipped when no PostgreSQL answers (see servers.py); tests/e2e runs the
same stories on SQLite every time."""
import pytest

from e2e import test_story as story
from common.config import SERVICES
from servers import require_postgres, running_system, throwaway_databases
from views_story import mypage_replicas_agree_with_the_reservations

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    require_postgres()
    with throwaway_databases(*SERVICES) as uris:
        env = {f"{service.upper()}_DB_URI": uri for service, uri in uris.items()}
        with running_system(tmp_path_factory.mktemp("postgres-system"), env) as cluster:
            yield cluster


test_stock_reserve_confirm_ship_deliver_return_cancel = story.test_stock_reserve_confirm_ship_deliver_return_cancel
test_forty_customers_for_five_copies = story.test_forty_customers_for_five_copies
test_three_delivery_replicas_create_exactly_one_delivery_each = \
    story.test_three_delivery_replicas_create_exactly_one_delivery_each


def test_three_product_and_mypage_replicas_on_one_database_each(system, library):
    """Replicas of product and mypage race for the same rows: no copy is
    allocated twice, and every MyPage row ends where its reservation is."""
    mypage_replicas_agree_with_the_reservations(system, library, replicas=3, product_replicas=3)
