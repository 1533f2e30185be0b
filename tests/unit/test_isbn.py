"""common.isbn: what the catalogue calls an ISBN, and what a search looks for."""
import pytest

from common import isbn


def test_with_check_digit_makes_valid_isbns():
    assert isbn.with_check_digit("978044117271") == "9780441172719"
    assert isbn.to_isbn13(isbn.with_check_digit("979100000000")) == isbn.with_check_digit("979100000000")


def test_the_979_prefix_is_an_isbn_13_too():
    assert isbn.to_isbn13("979-10-90636-07-1") == "9791090636071"


def test_an_isbn_13_must_start_with_978_or_979():
    with pytest.raises(ValueError, match="978 or 979"):
        isbn.to_isbn13(isbn.with_check_digit("977044117271"))


@pytest.mark.parametrize("query, digits", [
    ("978-0-441", "9780441"), ("0441 17271", "044117271"), ("0-441-17271-7", "9780441172719"),
    ("9780441172719", "9780441172719"), ("0-8044-2957-x", "9780804429573"),
    ("dune", None), ("", None), ("--", None), ("١٢٣", None), ("978a", None)])
def test_a_search_looks_for_the_digits_it_was_given(query, digits):
    assert isbn.searched_digits(query) == digits


def test_a_nine_digit_sbn_is_no_isbn():
    # stdnum takes the SBN of before 1970 as an ISBN-10; SPEC §5 asks for 10 or 13 digits.
    with pytest.raises(ValueError, match="10 or 13 digits"):
        isbn.to_isbn13("000000000")
    assert isbn.to_isbn13("0-441-17271-7") == "9780441172719"
