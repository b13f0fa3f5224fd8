"""The one kind of error a user sees: bad input, shown as one line that names the key or the file.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (params, files). Shown as one line, without a traceback."""
