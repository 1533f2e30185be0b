"""The gateway owns one thing: the accounts that may sign in, and their role."""
from common.errors import NotAllowed
from gateway import auth


class Account:
    def __init__(self, username, password_hash, role):
        self.username = username
        self.password_hash = password_hash
        self.role = role

    @classmethod
    def sign_up(cls, username, password, taken):
        """Anyone may become a customer; no one may choose another role."""
        if taken:
            raise NotAllowed("this username is taken", username=username)
        auth.check_new_password(username, password)
        return cls(username, auth.hash_password(password), "customer")

    def to_dict(self):
        return {"username": self.username, "role": self.role}
