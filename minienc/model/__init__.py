"""The textbook: the model itself, in PyTorch alone. config -> activations, linear, attention -> one file per family
(bert.py: BERT, MiniLM, RoBERTa, XLM-R) -> pooling. Nothing here reads a file or a tokenizer; the linear layers'
kernel is set from outside (runtime/matmul.py, use_kernel)."""
