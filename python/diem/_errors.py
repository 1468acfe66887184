"""The exceptions diem raises. Messages name the file and the field, as the command line's do."""


class DiemError(Exception):
    """Base class of every error raised by diem's core."""


class ConfigError(DiemError, ValueError):
    """An invalid configuration value or argument (the message names the field)."""


class ShapeError(DiemError, ValueError):
    """Arrays whose shapes do not fit together."""


class DataFileError(DiemError, OSError):
    """A file or directory that cannot be read or written, or has the wrong format."""


class NonFiniteError(DiemError, ArithmeticError):
    """NaN or infinity where finite values are needed."""
