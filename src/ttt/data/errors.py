"""The one exception type of the data pipeline: bad inputs, mismatched tokenizers, corrupted files."""


class DataError(ValueError):
    """A data source, prepared folder or tokenizer that cannot be used as asked; the message names the problem."""
