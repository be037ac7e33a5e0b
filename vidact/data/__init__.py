"""Data sources that produce the one batch type (vidact.types.Batch)."""
