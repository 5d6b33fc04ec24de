"""Training: the `Trainer` for contrastive text-video retrieval with negatives gathered from every process."""
