"""Data: retrieval benchmarks as `datasets`, the training dataset and collator, tokenizers, the synthetic benchmark."""
