"""The textbook: the model itself, in PyTorch alone. activations, linear, blocks, attention (one contract for every
family) -> one file per family, each with its config, modules (or those of the family it varies), key table and
record (bert.py: BERT, MiniLM, RoBERTa, XLM-R; llama.py: the decoders; ...; the record: family.py) -> pooling. Nothing here reads a file or a
tokenizer; the linear layers' kernel is set from outside (runtime/matmul.py, use_kernel)."""
