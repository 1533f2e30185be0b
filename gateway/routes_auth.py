"""The gateway's account and session routes: sign-in and refresh (JSON, or
OAuth 2's token endpoint), sign-out, the signing keys, sign-up, and the
account's own contact. A mixin of ``GatewayService`` (gateway.service), which
declares the dependencies used here (``store``, ``authority``, ``config``):
Nameko finds the entrypoints of a service's base classes too.

Accounts and sessions are read and written through the gateway's repository
(``tx.accounts`` in a transaction, ``self.store.accounts()`` to read:
gateway.models.Accounts), never a database session.

Account changes are announced as ``customer_updated`` through the gateway's
own outbox, so ``notification`` learns where to mail without ever asking the
gateway.
"""
import logging
import random
import time

from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from common.errors import NotAllowed, NotFound
from gateway import auth, schemas, sessions
from gateway.domain import Account
from gateway.errors import OAuthError, Unauthorized, json_response
from gateway.http import api

log = logging.getLogger(__name__)

PRUNE_CHANCE = 0.01  # of a sign-in deleting the refresh tokens that expired a day ago


class AuthRoutes:
    @api("POST", "/auth/token", body=schemas.Credentials, form=schemas.GRANTS, tag="auth", limit="login",
         response=schemas.Token, errors=(401, 503))
    def issue_token(self, request, body, form, user):
        """Sign in, or refresh a session. The answer: an access token (a JWT
        signed with RS256, good for `expires_in` seconds) and a refresh token
        (good once, for a new pair before the access token expires). JSON
        `{"username", "password"}` answers errors in this API's form; a
        form-encoded body is an OAuth 2 token request (RFC 6749 §4.3 and
        §6: `grant_type=password` with `username` and `password`, or
        `grant_type=refresh_token` with `refresh_token`) answered in RFC 6749
        §5.2's form. A refresh token used twice ends its session."""
        if form is None:
            return self._sign_in(body["username"], body["password"], None,
                                 Unauthorized("wrong username or password"))
        if form["grant_type"] == "password":
            return self._sign_in(form["username"], form["password"], form["client_id"],
                                 OAuthError("invalid_grant", "wrong username or password"))
        return self._refresh(form["refresh_token"], form["client_id"], user)

    @api("POST", "/auth/logout", roles=set(auth.ROLES), status=204, tag="auth", errors=(503,))
    def logout(self, request, user):
        """Sign out: this access token and its session's refresh token are
        refused from now on, by every gateway replica within a second."""
        deny_list = self.authority.deny_list
        deny_list.deny([(user["jti"], user["exp"])])  # first: if that fails (503), nothing changed
        if user["session"] is not None:
            with self.store.transaction() as tx:
                others = sessions.revoke(tx.accounts, user["session"], time.time())
            deny_list.deny([entry for entry in others if entry[0] != user["jti"]])
        log.info("signed out", extra={"username": user["username"]})
        return Response(status=204, headers={"Cache-Control": "no-store"})

    @api("GET", "/.well-known/jwks.json", tag="auth", response=schemas.KeySet, errors=(503,))
    def jwks(self, request):
        """The public keys that sign access tokens (a JWK Set, RFC 7517):
        verify a token with the key of its `kid`, algorithm RS256."""
        response = json_response(self.authority.tokens.source.current().jwks())
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    def _sign_in(self, username, password, client_id, failure):
        with self.store.accounts() as accounts:
            account = accounts.find(username)
            if not auth.verify(account, password):
                raise failure
            username, role = account.username, account.role
        session_id = sessions.new_session_id()
        token, claims = self.authority.tokens.issue(username, role, session_id)
        now = time.time()
        with self.store.transaction() as tx:
            refresh = sessions.issue(tx.accounts, session_id, username, client_id, (claims["jti"], claims["exp"]),
                                     now, self._refresh_ttl())
            if random.random() < PRUNE_CHANCE:  # now and then: forget tokens long expired
                sessions.prune(tx.accounts, now)
        return _token_answer(token, claims, refresh)

    def _refresh(self, refresh_token, client_id, user):
        now = time.time()
        failure = None
        with self.store.transaction() as tx:
            try:
                session_id, username, client_id = sessions.use(
                    tx.accounts, refresh_token, now, client_id, user["username"] if user else None)
                account = tx.accounts.find(username)
                if account is None:
                    raise sessions.InvalidGrant("the account no longer exists",
                                                revoked=sessions.revoke(tx.accounts, session_id, now))
                token, claims = self.authority.tokens.issue(account.username, account.role, session_id)
                refresh = sessions.issue(tx.accounts, session_id, account.username, client_id,
                                         (claims["jti"], claims["exp"]), now, self._refresh_ttl())
            except sessions.InvalidGrant as error:
                failure = error  # the transaction commits what the failure revoked
        if failure is not None:
            if failure.revoked:
                log.warning("session revoked: %s", failure.message)
                try:
                    self.authority.deny_list.deny(failure.revoked)
                except Exception:
                    log.exception("the revoked session's access tokens could not be denied")
            raise OAuthError("invalid_grant", failure.message)
        return _token_answer(token, claims, refresh)

    def _refresh_ttl(self):
        return int(self.config.get("REFRESH_TOKEN_TTL") or sessions.DEFAULT_TTL)

    @api("POST", "/auth/register", body=schemas.Registration, status=201, tag="auth", limit="signup",
         response=schemas.Account, errors=(409, 503))
    def register(self, request, body):
        """Sign up as a customer."""
        try:
            with self.store.transaction() as tx:
                taken = tx.accounts.name_taken(body["username"])
                account = Account.sign_up(body["username"], body["password"], taken,
                                          body.get("email"), body.get("address"))
                tx.accounts.add(account)
                tx.emit("customer_updated", **account.contact())
        except IntegrityError:  # signed up twice at the same moment
            raise NotAllowed("this username is taken", username=body["username"]) from None
        log.info("account created", extra={"username": account.username})
        return account.to_dict()

    @api("GET", "/account", roles={"customer", "librarian", "courier"}, tag="auth",
         response=schemas.Profile, errors=(404, 503))
    def get_account(self, request, user):
        """Your account: username, role, email (where notices go) and address (where books go)."""
        with self.store.accounts() as accounts:
            return self._account(accounts, user).profile()

    @api("PATCH", "/account", roles={"customer", "librarian", "courier"}, body=schemas.ContactChange, tag="auth",
         response=schemas.Profile, errors=(404, 503))
    def change_account(self, request, user, body):
        """Change your email or address (what the body names; null clears it). A new
        address is where later reservations go; books already on their way keep theirs."""
        with self.store.transaction() as tx:
            account = self._account(tx.accounts, user)
            if account.change_contact(body):
                tx.emit("customer_updated", **account.contact())
            return account.profile()

    @staticmethod
    def _account(accounts, user):
        account = accounts.find(user["username"])
        if account is None:  # a valid token for an account since removed
            raise NotFound("no such account", username=user["username"])
        return account


def _token_answer(token, claims, refresh_token):
    """RFC 6749 §5.1's answer (the JSON sign-in's too): never cached."""
    return json_response({"access_token": token, "token_type": "bearer", "expires_in": claims["exp"] - claims["iat"],
                          "refresh_token": refresh_token}, headers={"Pragma": "no-cache"})
