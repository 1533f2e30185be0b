"""ISBNs as the catalogue keeps them: 13 digits, checked.

A title's ISBN may be typed as an ISBN-10 or an ISBN-13, with hyphens and
spaces (``0-441-17271-7``, ``978 0 441 17271 9``); it is valid when its
length, prefix (978/979) and check digit are, and it is kept as its 13
digits (``9780441172719``), so one book has one ISBN whatever way it was
typed. The checks are python-stdnum's (``stdnum.isbn``), not ours.

Plain Python: the gateway's schemas and product's domain both use it.
"""
from stdnum import ean as _ean, isbn as _isbn
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError

SEPARATORS = " -"
PROBLEMS = [  # what stdnum found wrong, in words
    (InvalidChecksum, "the check digit is wrong"),
    (InvalidLength, "an ISBN has 10 or 13 digits"),
    (InvalidComponent, "an ISBN-13 starts with 978 or 979"),
    (ValidationError, "an ISBN is digits (an ISBN-10 may end in X), hyphens and spaces"),
]


def to_isbn13(text):
    """The 13 digits of the ISBN-10 or ISBN-13 ``text``; ``ValueError``
    (saying what is wrong) when it is no valid ISBN."""
    try:
        # stdnum also takes a 9-digit SBN (as its ISBN-10 with a 0 in front); the spec does not
        if len("".join(ch for ch in text if ch not in SEPARATORS)) not in (10, 13):
            raise InvalidLength()
        compact = _isbn.validate(text)
    except ValidationError as error:
        problem = next(words for kind, words in PROBLEMS if isinstance(error, kind))
        raise ValueError(f"not a valid ISBN-10 or ISBN-13: {problem}") from None
    return _isbn.to_isbn13(compact)


def searched_digits(query):
    """What to look for among the stored 13 digits when someone searches for
    ``query``: its digits without the hyphens and spaces (a full ISBN-10
    becomes its ISBN-13), or None when ``query`` is not digits at all."""
    compact = "".join(ch for ch in query if ch not in SEPARATORS).upper()
    if len(compact) == 10 and _isbn.is_valid(compact):
        return _isbn.to_isbn13(compact)
    if compact.isdigit() and compact.isascii():
        return compact
    return None


def with_check_digit(first_twelve):
    """The ISBN-13 that starts with these 12 digits (``978...``), its check
    digit computed: for demo data, benchmarks and tests."""
    return first_twelve + _ean.calc_check_digit(first_twelve)
