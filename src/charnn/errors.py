"""The one error type a user can cause.

Everything a user can get wrong (a missing file, a bad flag value, a checkpoint that does not
match) raises ``CharnnError`` with a message that says what was wrong and what to do. The CLI
prints that message as one line and exits with code 2; no traceback reaches the user.
"""


class CharnnError(Exception):
    """A problem with the user's input, reported as one clear line."""
