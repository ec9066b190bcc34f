"""One exception type for bad input: the CLI prints its message as one line and exits 2."""


class KitError(Exception):
    """Bad input or a state the user must fix. The message names the file, row or key and what to do."""

    exit_code = 2
