"""Data: retrieval benchmarks as `datasets`, the one dataset and collator of training, evaluation and indexing,
tokenizers, the synthetic benchmark."""
