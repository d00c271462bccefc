"""golfpack's one error hierarchy, rooted at GolfpackError, and the exit code of each class.

Lives in `common`, which imports nothing else of ours, so every package can depend on it. Messages name the
file, section, tensor, option or offset at fault and say what to do. Each top-level class has its own exit
code (README "Exit codes"); `cli.py` maps errors to them, and nothing else calls sys.exit.
"""


INTERNAL_ERROR_EXIT_CODE = 70      # EX_SOFTWARE: an exception golfpack did not raise on purpose (a bug)


FLAG_ALIASES = {"n_passes": "--passes", "n_blocks": "--blocks", "menu": "--formats", "codec": "--codecs",
                "max_measured_seconds": "--calib-seconds", "n_boot": "--bootstrap", "fraction": "--route-fraction",
                "signal": "--route-signal", "cap": "--route-cap"}


def flag(field: str) -> str:
    """The command-line flag of a request dataclass field, for messages: budget_bytes -> --budget-bytes."""
    return FLAG_ALIASES.get(field, "--" + field.replace("_", "-"))


class GolfpackError(Exception):
    """Base of every error golfpack raises on purpose."""

    exit_code = 1


class UsageError(GolfpackError):
    """An option or argument is invalid (bad value, conflicting flags, missing file)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration dataclass was given an invalid value (named by its command-line flag)."""


class MismatchError(GolfpackError):
    """Inputs that do not belong together: a tokenizer, data or model code that is not the one an artifact or
    checkpoint was made with."""

    exit_code = 8


class OutputError(GolfpackError):
    """An output the command may not write: an input of the run, a file golfpack did not write (without
    --force), a folder, or a place that does not exist or is not writable. Checked before any work."""

    exit_code = 9


class DataError(GolfpackError):
    """Input data (text, shards, tokenizer) is malformed or missing."""

    exit_code = 3


class ShardError(DataError):
    """A Parameter Golf token shard is malformed: bad magic, version, or size."""


class CheckpointError(GolfpackError):
    """A checkpoint cannot be read or does not match the architecture it claims."""

    exit_code = 4


class ArtifactError(GolfpackError):
    """An artifact file is malformed, corrupted, truncated, or of an unsupported kind."""

    exit_code = 5


class FormatError(ArtifactError):
    """Structural problem: magic, version, header, section table or manifest schema."""


class ChecksumError(ArtifactError):
    """A CRC32 of a section or the SHA-256 of the whole file does not match."""


class CodecError(ArtifactError):
    """A section cannot be decoded by the codec it names (unknown codec or corrupt payload)."""


# The reader's rejections, one class per kind (FORMAT.md "Reading" lists which check raises which).
class TruncatedError(FormatError):
    """The file ends before a part its header declares (shorter than header + trailer, or the manifest)."""


class MagicError(FormatError):
    """The first four bytes are not the golfpack magic: this is not an artifact."""


class VersionError(FormatError):
    """The format version in the header is not one this reader supports."""


class ManifestError(FormatError):
    """The manifest bytes are not canonical ASCII JSON within the size, depth and number limits."""


class SchemaError(ManifestError):
    """A manifest member is missing, of the wrong type, out of range, or badly named."""


class SizeError(SchemaError):
    """A declared size is inconsistent (element count x element size) or over a reader limit."""


class UnknownFormatError(SchemaError):
    """A tensor names a storage format that is not in packer.constants.TENSOR_FORMATS."""


class ScaleError(FormatError):
    """A tensor's stored scales are not finite (NaN or infinite): checked when the tensor is rebuilt."""


class SectionTableError(FormatError):
    """The section table does not tile the payload exactly (gap, overlap, out of range, unaccounted bytes)."""


class BudgetError(GolfpackError):
    """The artifact plus counted code would exceed the byte budget."""

    exit_code = 6


class QuantError(GolfpackError):
    """A tensor cannot be quantized in the requested format."""

    exit_code = 7
