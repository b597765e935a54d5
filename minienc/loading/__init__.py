"""From files to objects: hub.py finds a model's folder, checkpoint.py reads its safetensors into our names,
encoder.py builds the model config.json names, tokenizer.py reads tokenizer.json."""
