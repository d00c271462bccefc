"""golfpack's one error hierarchy, rooted at GolfpackError.

Lives in `packer` because `packer` imports nothing else of ours, so every package can depend on it.
Messages name the file, section, tensor, field or offset at fault and say what to do. `cli.py` maps each
class to an exit code; nothing else calls sys.exit.
"""


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


class BudgetError(GolfpackError):
    """The artifact plus counted code would exceed the byte budget."""

    exit_code = 6


class QuantError(GolfpackError):
    """A tensor cannot be quantized in the requested format."""

    exit_code = 7
