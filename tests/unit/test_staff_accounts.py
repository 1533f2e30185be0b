"""Outside development there are no demo accounts: staff are created by an
operator with ``python -m gateway.accounts``, and sign in like anyone."""
import io

import pytest

from gateway import accounts, auth
from gateway.accounts import main


@pytest.fixture
def database(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_DB_URI", f"sqlite:///{tmp_path}/gateway.db")
    return tmp_path


def test_an_operator_creates_a_librarian_who_can_sign_in(database, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-pass-123\n"))
    main(["create", "ada", "--role", "librarian"])
    main(["list"])
    assert "ada\tlibrarian" in capsys.readouterr().out
    with accounts._accounts(accounts.os.path.join(accounts.ROOT, "config.yml")) as repository:
        account = repository.find("ada")
        assert auth.verify(account, "a-long-pass-123") and not auth.verify(account, "wrong")


def test_a_weak_password_or_a_taken_name_is_refused(database, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(Exception, match="too weak"):
        main(["create", "ada", "--role", "courier"])
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-pass-123\n"))
    main(["create", "ada", "--role", "courier"])
    with pytest.raises(SystemExit, match="exists"):
        main(["create", "ada", "--role", "courier"])
