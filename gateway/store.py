"""The gateway's store (accounts, refresh tokens, its outbox), given to
``GatewayService`` as ``store``."""
from common.store import Store
from gateway import auth, models
from gateway.domain import DEMO_CONTACTS, Account


class AccountStore(Store):
    """The gateway's store: its write transactions carry the repository
    (``tx.accounts``: gateway.models.Accounts), ``accounts()`` reads through
    one (``common.store.Store.repository``); it creates the demo accounts in
    development. (Without
    a signing key outside development the gateway refuses to start: see
    ``gateway.authority``.)

    The demo customers' contacts are announced (``customer_updated``) at
    every start in development: an announcement is the whole contact as it
    is now, so a repeat changes nothing, and a ``notification`` whose queue
    did not exist yet at the first one learns them all the same.

    Serialized on PostgreSQL (``common.store.Store``): a refresh token's
    rotation reads its whole family before it decides."""

    serialized = True
    repository = ("accounts", models.Accounts)

    def setup(self):
        super().setup()
        if self.container.config.get("PROFILE", "development") == "development":
            with self.transaction() as tx:
                for username, password, role in auth.DEMO_ACCOUNTS:
                    email, address = DEMO_CONTACTS.get(username, (None, None))
                    account = tx.accounts.find(username)
                    if account is None:
                        account = Account(username, auth.hash_password(password), role, email, address)
                        tx.accounts.add(account)
                    elif account.email is None and account.address is None:  # made before accounts had them
                        account.change_contact({"email": email, "address": address})
                    if username in DEMO_CONTACTS:
                        tx.emit("customer_updated", **account.contact())

    def address_of(self, username):
        """The account's address now, read on every ``POST /reservations``: one
        statement on a pooled connection, without the ORM session that
        ``accounts()`` opens (a fifth of the gateway's CPU per reservation in
        py-spy; 192 -> 59 µs in a micro-benchmark: docs/performance.md)."""
        with self.read_engine.connect() as connection:
            return models.address_of(connection, username)

    def get_dependency(self, worker_ctx):
        handle = super().get_dependency(worker_ctx)
        handle.address_of = self.address_of
        return handle
