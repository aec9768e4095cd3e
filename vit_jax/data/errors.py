"""The one exception type of the input pipeline, so callers can tell data faults from bugs."""


class DataError(ValueError):
    """A bad data config, a missing dataset, or an example that cannot be read or processed.

    Messages say what was wrong and what would be valid (the valid names, the file at fault).
    """
