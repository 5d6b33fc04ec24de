"""Analysis: token and FLOP accounting, the paper's reported figures, pictures of merges."""
