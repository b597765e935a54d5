"""Embedding on Ray Data: a callable class in the shape Ray documents for batch inference (`Dataset.map_batches`).

    import ray, minienc.ray
    ds = ray.data.read_parquet("corpus/")
    ds = ds.map_batches(minienc.ray.Embed, fn_constructor_kwargs={"model": "sentence-transformers/all-MiniLM-L6-v2"},
                        batch_size=512, concurrency=4)        # on GPUs: add num_gpus=1 and "device": "cuda"
    ds.write_parquet("vectors/")

Ray makes `concurrency` instances of Embed, each loading the model once, and calls each on batches of rows: the
`text` column (or another) is embedded into a new `embedding` column, every other column kept. If a worker dies in
the middle of a batch, Ray runs that batch again on another worker (task retries): a batch is written whole or not
at all, and since packed execution is batch-invariant, a retried batch gives the same bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .heads.sentence import DEFAULT_MODEL, SentenceEncoder


class Embed:
    def __init__(self, model: str = DEFAULT_MODEL, text_column: str = "text", embedding_column: str = "embedding",
                 device: str | None = None, normalize_embeddings: bool = False, prompt_name: str | None = None,
                 execution: str = "packed", attention: str = "sdpa", matmul: str | None = None,
                 dtype: str | None = None):
        self.model = SentenceEncoder.from_pretrained(model, device=device, execution=execution, attention=attention,
                                                     matmul=matmul, dtype=dtype)
        self.text_column, self.embedding_column = text_column, embedding_column
        self.normalize, self.prompt_name = normalize_embeddings, prompt_name

    def __call__(self, batch: Any) -> Any:
        """A batch as Ray gives it: a dict of NumPy arrays (the default batch_format) or a pandas DataFrame."""
        if self.text_column not in batch:
            raise KeyError(f"minienc.ray.Embed: the batch has no column {self.text_column!r} (columns: "
                           f"{list(batch.keys())}); pass text_column in fn_constructor_kwargs")
        texts = [str(t) for t in list(batch[self.text_column])]
        vectors = self.model.encode(texts, prompt_name=self.prompt_name,
                                    normalize_embeddings=self.normalize)  # (rows, dim) float32
        if isinstance(batch, dict):
            return {**batch, self.embedding_column: vectors}
        return batch.assign(**{self.embedding_column: list(vectors)})


def embed_dataset(input_path: str, output: str, address: str | None, batch_size: int, concurrency: int,
                  embed_options: dict) -> None:
    """`minienc encode --ray [ADDRESS]`: read --input with Ray Data (.txt one text a line, .jsonl, .parquet),
    embed on the cluster at ADDRESS (or a local one), write parquet shards to the --output folder, in input order."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray Data: pip install 'minienc[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    readers = {".jsonl": ray.data.read_json, ".parquet": ray.data.read_parquet}
    read = readers.get(Path(input_path).suffix, lambda path: ray.data.read_text(path, drop_empty_lines=False))
    ds = read(input_path)
    device = embed_options.get("device")
    ds = ds.map_batches(Embed, fn_constructor_kwargs=embed_options, batch_size=batch_size, concurrency=concurrency,
                        num_gpus=1 if device and device.startswith("cuda") else None)
    ds.write_parquet(output)


def read_parquet_vectors(folder: str, embedding_column: str = "embedding", id_column: str | None = None
                         ) -> tuple[list, np.ndarray]:
    """(ids, vectors) of a parquet folder Ray wrote, in file order (ids: id_column, else row numbers from 1, as the
    line numbers of a text input)."""
    import pyarrow.dataset

    table = pyarrow.dataset.dataset(folder, format="parquet").to_table()
    vectors = np.array(table.column(embedding_column).to_pylist(), dtype=np.float32)
    ids = table.column(id_column).to_pylist() if id_column else list(range(1, len(vectors) + 1))
    return ids, vectors
