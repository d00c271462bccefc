"""golfpack's one error hierarchy, rooted at GolfpackError.

Lives in `packer` because `packer` imports nothing else of ours, so every package can depend on it.
Messages name the file, section, tensor, field or offset at fault and say what to do. `cli.py` maps each
class to an exit code; nothing else calls sys.exit.
"""


INTERNAL_ERROR_EXIT_CODE = 70      # EX_SOFTWARE: an exception golfpack did not raise on purpose (a bug)


class GolfpackError(Exception):
    """Base of every error golfpack raises on purpose."""

    exit_code = 1


class UsageError(GolfpackError):
    """An option or argument is invalid (bad value, conflicting flags, missing file)."""

    exit_code = 2


class ConfigError(GolfpackError):
    """A configuration dataclass was given an invalid value."""

    exit_code = 2


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
