"""The artifact file: constants, manifest, sections, codecs, writer, reader, audit. Never imports torch."""
