"""One text pipeline (pipeline.py) and the encoders on it: sentence.py (one vector per text), sparse.py (SPLADE),
multivector.py (ColBERT), m3.py (bge-m3); chunks.py (long texts in windows), similarity.py, quantize.py."""
