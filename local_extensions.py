"""Jinja extensions of the template, loaded by cookiecutter from `_extensions`."""

from jinja2 import Environment
from jinja2.ext import Extension


def toml_escape(value: object) -> str:
    """Escape a value for the inside of a TOML basic string ("...").

    Jinja's `tojson` is not enough: it escapes characters outside the BMP as
    UTF-16 surrogate pairs, which TOML rejects, and it leaves DEL unescaped.
    """
    out = []
    for char in str(value):
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


class TomlEscapeExtension(Extension):
    """Add the `toml_escape` filter."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml_escape"] = toml_escape
