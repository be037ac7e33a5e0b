"""Frame, text, action tokenizers."""
