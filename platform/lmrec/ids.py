"""Id conventions shared by data preparation, models, evaluation and serving (a leaf: imports nothing)."""

PAD_ID = 0  # item index 0 is padding; catalog items are 1..num_items
