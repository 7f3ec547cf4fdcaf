"""Item content turned into model inputs: text embeddings computed with Ray Data (issue 22)."""
