"""The gateway owns one thing: the accounts that may sign in, their role,
and where their customer is reached (email, for notices) and served
(address, where books go by default)."""
from common.errors import NotAllowed
from gateway import auth

# The demo customers' contact details (development profile only).
DEMO_CONTACTS = {
    "alice": ("alice@example.org", "12 Reading Lane, Booktown"),
    "bob": ("bob@example.org", "3 Chapter Street, Booktown"),
}


class Account:
    def __init__(self, username, password_hash, role, email=None, address=None):
        self.username = username
        self.password_hash = password_hash
        self.role = role
        self.email = email
        self.address = address

    @classmethod
    def sign_up(cls, username, password, taken, email=None, address=None):
        """Anyone may become a customer; no one may choose another role."""
        if taken:
            raise NotAllowed("this username is taken", username=username)
        auth.check_new_password(username, password)
        return cls(username, auth.hash_password(password), "customer", email, address)

    def change_contact(self, changes):
        """Change what ``changes`` names (``email``, ``address``; None clears
        it); True when something changed."""
        changed = False
        for name in ("email", "address"):
            if name in changes and changes[name] != getattr(self, name):
                setattr(self, name, changes[name])
                changed = True
        return changed

    def contact(self):
        """The fields of the ``customer_updated`` event: the contact as it is now."""
        return {"customer": self.username, "email": self.email, "address": self.address}

    def to_dict(self):
        return {"username": self.username, "role": self.role}

    def profile(self):
        return {"username": self.username, "role": self.role, "email": self.email, "address": self.address}
