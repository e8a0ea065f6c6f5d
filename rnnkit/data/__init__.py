"""Data for rnnkit: file readers, vocabularies and tokenizers, the dataset catalog, and batching.

============  ===========================================================================
module        what it holds
============  ===========================================================================
readers       one reader per task file format, with precise errors (``DataError``)
writers       the inverse of the readers
vocab         ``Vocab`` (char / word, specials <pad> <unk> <bos> <eos> = 0 1 2 3), ``LabelSet``
bpe           ``BPETokenizer``: subwords through the ``tokenizers`` library
tokenizer     the ``Tokenizer`` interface of both, ``load_tokenizer`` (whichever a file holds)
jsonfile      their JSON files: format header, atomic save, errors naming the file
tokenized     parallel corpora at scale: a tokenizer per side, token ids memory-mapped in the run directory
catalog       named datasets: list, describe, fetch, load, resolve ``--data`` sources
datasets      the catalog's entries: what each named dataset is and how it is built
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
    token_batches,
    token_stream,
    unpack,
    valid_mask,
)
from rnnkit.data.bpe import BPETokenizer
from rnnkit.data.catalog import (
    DatasetInfo,
    alternatives,
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
    source_file,
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
    stream_parallel,
)
from rnnkit.data.series import StandardScaler, make_windows
from rnnkit.data.tokenized import (
    SOURCE_VOCAB_FILE,
    TARGET_VOCAB_FILE,
    TOKEN_LEVELS,
    RaggedArray,
    TokenizedCorpus,
    TokenizedPairs,
    build_tokenizer,
    tokenize_corpus,
    trained_sources,
)
from rnnkit.data.tokenizer import Tokenizer, load_tokenizer
from rnnkit.data.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    LabelSet,
    Vocab,
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
    "BOS_ID", "EOS_ID", "IGNORE_INDEX", "PAD_ID", "SOURCE_VOCAB_FILE", "SPECIAL_TOKENS", "TARGET_VOCAB_FILE",
    "TASKS", "TOKEN_LEVELS", "UNK_ID",
    "BPETokenizer", "BucketBatchSampler", "DataError", "DataWarning", "DatasetInfo", "DatePair", "LabelSet",
    "LabeledText", "ReadReport", "Records", "SentencePair", "SequenceArrays", "Series", "SkippedLine",
    "RaggedArray", "StandardScaler", "TaggedSentence", "Text", "TokenizedCorpus", "TokenizedPairs", "Tokenizer",
    "Vocab", "adding_problem", "batchify", "bptt_chunks", "bucketed_batches", "build_tokenizer", "copy_memory",
    "alternatives", "copy_memory_baseline",
    "data_command", "default_cache_dir", "describe", "fetch", "format_catalog", "generate_dates",
    "generate_numbers", "generate_reverse", "is_catalog_name", "list_datasets", "load", "load_all",
    "load_source", "load_tokenizer", "make_windows", "num_bptt_chunks", "pack", "pad_sequences", "padded_fraction",
    "random_batches", "token_batches", "read", "read_arrays", "read_classification", "read_parallel", "read_series",
    "read_tagging", "read_text", "resolve_source", "sequential_digits", "source_file", "stream_parallel",
    "token_stream", "tokenize_corpus", "trained_sources", "unpack",
    "valid_mask",
    "write_arrays", "write_classification", "write_parallel", "write_series", "write_tagging", "write_text",
]
