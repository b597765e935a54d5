"""Readers of folder formats: what a sentence-transformers, SPLADE, ColBERT / PyLate or bge-m3 folder says, as
plain settings for the heads."""
