"""Build the small seeded checkpoints in weights/, one of every family: a tiny BERT, XLM-R, MPNet, DistilBERT,
NomicBERT, GTE, jina-embeddings-v3, Qwen3-Embedding, Llama, Qwen2, Mistral, ModernBERT embedder and EmbeddingGemma,
each with a tokenizer.json and sentence-transformers module files, so readers and quick tests have real files on
disk.

    python scripts/make_tiny_weights.py [--out weights]

Needs transformers (the test extra). Deterministic: the tokenizers are trained on the fixed text below and the
weights drawn from a fixed seed, so re-running it reproduces the same files.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

CORPUS = """
An encoder reads a whole sentence at once. Each token becomes a vector: its word embedding, plus the embedding of
its position, plus the embedding of its segment. A layer normalization keeps every vector at a steady scale.
Self-attention lets every token look at every other token. Queries meet keys, the scores become weights through a
softmax, and the weights mix the values. Many heads do this side by side, each in a smaller space.
A feed-forward network then widens each vector, applies a nonlinearity such as GELU, and narrows it again.
After each block the input is added back and normalized. Stack six or twelve such layers and you have BERT.
To turn token vectors into one sentence vector, pool them: take the first token, or the mean of the real tokens,
or the maximum of each feature. Divide by the length to get a unit vector, and compare two texts by their cosine.
Padding fills short texts up to the longest one in a batch; the attention mask tells the model to ignore it.
The quick brown fox jumps over the lazy dog. How do I initialise DDR4 memory? Hello world, hello encoder!
Numbers like 0 1 2 3 4 5 6 7 8 9 10 100 2024 and symbols like , . ; : ! ? ( ) [ ] - + = / * % & # @ appear too.
头痛 怎么办 你好 世界 编码器 向量 句子 注意力 多语言 模型 🙂 🚀 ✨ café naïve ümlaut résumé
"""
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
EOT = "<|endoftext|>"  # Qwen's end-of-text token
QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


def corpus_lines() -> list[str]:
    return [line for line in CORPUS.strip().splitlines() if line] * 4


def bert_tokenizer(specials: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
                   cls: str = "[CLS]", sep: str = "[SEP]", unk: str = "[UNK]", pair: str = "[CLS] $A [SEP] $B:1 [SEP]:1"
                   ) -> Tokenizer:
    """WordPiece over a vocabulary listed from the corpus: every character, its '##' continuation, and every whole
    word. (tokenizers' WordPieceTrainer was seen to give a different vocabulary on two runs of the same text.) The
    special tokens are BERT's by default; MPNet's are RoBERTa's names on the same scheme."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for line in corpus_lines() for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))})
    chars = sorted({c for w in words for c in w})
    pieces = list(specials) + chars + ["##" + c for c in chars] + [w for w in words if len(w) > 1]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token=unk))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair, special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def mpnet_tokenizer() -> Tokenizer:
    """MPNetTokenizer's scheme: BERT's WordPiece with <s> </s> around a text, <pad> = 1 (the id MPNet counts
    positions from), and a pair as <s> A </s></s> B </s>."""
    return bert_tokenizer(("<s>", "<pad>", "</s>", "<unk>", "<mask>"), "<s>", "</s>", "<unk>",
                          "<s> $A </s> </s> $B </s>")


def xlmr_tokenizer() -> Tokenizer:
    """Unigram (as XLM-R's SentencePiece) over pieces listed from the corpus: every '▁'-prefixed word and every
    character, scored by log frequency. (tokenizers' UnigramTrainer was seen to vary its scores from run to run.)"""
    # the pipeline transformers' XLMRobertaTokenizer builds (v5.x): no normalizer, whitespace split, then '▁' marks
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    counts = Counter(w for line in corpus_lines() for w, _ in pre_tokenizer.pre_tokenize_str(line))
    counts.update({c: n for w, n in list(counts.items()) for c in w for _ in range(n)})
    total = sum(counts.values())
    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids: bos 0, pad 1, eos 2, unk 3
    scored = sorted(((piece, round(math.log(n / total), 4)) for piece, n in counts.items()), key=lambda e: (-e[1], e[0]))
    tok = Tokenizer(models.Unigram([(piece, 0.0) for piece in specials] + scored, unk_id=3))
    tok.pre_tokenizer = pre_tokenizer
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tok.decoder = decoders.Metaspace()
    return tok


def byte_level_tokenizer(specials: list[str], template: str) -> Tokenizer:
    """Byte-level BPE as Qwen's, ModernBERT's and Gemma's, with no merges (every byte a token: deterministic, unlike a
    trained one); `specials` added after the 256 bytes, and the post-processor `template` framing each text."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({symbol: i for i, symbol in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    framing = [token for token in specials if token in template.split()]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(token, tok.token_to_id(token)) for token in framing])
    return tok


def write_prompts_and_tokenizer_config(folder: Path, prompts: dict[str, str], pad: str) -> None:
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "padding_side": "right",
         "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 512}, indent=2) + "\n")


def write_mpnet_tokenizer_config(folder: Path) -> None:
    """MPNetTokenizer's special tokens, as all-mpnet-base-v2's tokenizer_config.json names them."""
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "MPNetTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
         "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
         "do_lower_case": True, "model_max_length": 512}, indent=2) + "\n")


def write_dense_layers(folder: Path, widths: list[int]) -> None:
    """EmbeddingGemma's two Dense modules after pooling (no bias, no activation), inserted before Normalize."""
    from safetensors.torch import save_file

    modules = json.loads((folder / "modules.json").read_text())
    dense = [{"idx": i + 2, "name": str(i + 2), "path": f"{i + 2}_Dense", "type": "sentence_transformers.models.Dense"}
             for i in range(len(widths) - 1)]
    normalize = {**modules[-1], "idx": len(widths) + 1, "name": str(len(widths) + 1),
                 "path": f"{len(widths) + 1}_Normalize"}
    (folder / modules[-1]["path"]).rename(folder / normalize["path"])
    (folder / "modules.json").write_text(json.dumps([*modules[:2], *dense, normalize], indent=2) + "\n")
    for spec, (n_in, n_out) in zip(dense, zip(widths, widths[1:])):
        (folder / spec["path"]).mkdir(exist_ok=True)
        (folder / spec["path"] / "config.json").write_text(json.dumps(
            {"in_features": n_in, "out_features": n_out, "bias": False,
             "activation_function": "torch.nn.modules.linear.Identity"}, indent=2) + "\n")
        weight = torch.empty(n_out, n_in).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in))
        save_file({"linear.weight": weight.contiguous()}, str(folder / spec["path"] / "model.safetensors"))


def build_local_global(out: Path) -> None:
    """ModernBERT (an embedder as modernbert-embed: mean pooling, its search_query / search_document prompts) and
    EmbeddingGemma (mean pooling, two Dense layers, its prompts): local layers see 8 tokens each way."""
    import transformers

    specs = [
        ("tiny-modernbert-embed", byte_level_tokenizer(["[PAD]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]"),
         transformers.ModernBertConfig, transformers.ModernBertModel, {"query": "search_query: ", "document": "search_document: "},
         dict(num_hidden_layers=4, local_attention=16, global_attn_every_n_layers=3, max_position_embeddings=512)),
        ("tiny-embeddinggemma", byte_level_tokenizer(["<pad>", "<bos>", "<eos>"], "<bos> $A <eos>"),
         transformers.Gemma3TextConfig, transformers.Gemma3TextModel, {"query": "task: search result | query: ", "document": "title: none | text: "},
         dict(num_hidden_layers=3, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
              use_bidirectional_attention=True, max_position_embeddings=512)),
    ]
    for name, tokenizer, config_class, model_class, prompts, extra in specs:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        pad = tokenizer.id_to_token(256)
        ids = {"pad_token_id": 256, "bos_token_id": tokenizer.token_to_id("<bos>" if "gemma" in name else "[CLS]"),
               "eos_token_id": tokenizer.token_to_id("<eos>" if "gemma" in name else "[SEP]")}
        if "gemma" not in name:
            ids.update(cls_token_id=ids["bos_token_id"], sep_token_id=ids["eos_token_id"])
        config = config_class(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2,
                              **{**SIZES, **extra}, **ids)
        torch.manual_seed(0)
        model_class(config).save_pretrained(folder)
        tokenizer.save(str(folder / "tokenizer.json"))
        write_sentence_modules(folder, "mean", max_seq_length=512)
        if "gemma" in name:
            write_dense_layers(folder, [SIZES["hidden_size"], 2 * SIZES["hidden_size"], SIZES["hidden_size"]])
        write_prompts_and_tokenizer_config(folder, prompts, pad)
        report(folder, tokenizer)


def write_qwen3_embedding_files(folder: Path) -> None:
    """Qwen3-Embedding's sentence-transformers files: last-token pooling, Normalize, the query prompt, and the
    tokenizer's settings (left padding with the end-of-text token)."""
    write_sentence_modules(folder, "lasttoken", max_seq_length=512)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": SIZES["hidden_size"], "pooling_mode_lasttoken": True}, indent=2) + "\n")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": QUERY_PROMPT, "document": ""}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}, indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT, "pad_token": EOT, "padding_side": "left",
         "model_max_length": 512}, indent=2) + "\n")


def write_sentence_modules(folder: Path, pooling: str, max_seq_length: int) -> None:
    """The sentence-transformers layout: modules.json listing Transformer -> Pooling -> Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {"word_embedding_dimension": SIZES["hidden_size"], f"pooling_mode_{pooling}_token": True}
    if pooling == "mean":
        pooling_config = {"word_embedding_dimension": SIZES["hidden_size"], "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2) + "\n")
    (folder / "2_Normalize").mkdir(exist_ok=True)


def build(out: Path) -> None:
    import transformers

    specs = [
        ("tiny-bert", bert_tokenizer(), transformers.BertConfig, transformers.BertModel, "mean",
         dict(max_position_embeddings=128, type_vocab_size=2, pad_token_id=0)),
        ("tiny-xlm-roberta", xlmr_tokenizer(), transformers.XLMRobertaConfig, transformers.XLMRobertaModel, "cls",
         dict(max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
        ("tiny-mpnet", mpnet_tokenizer(), transformers.MPNetConfig, transformers.MPNetModel, "mean",
         dict(max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    ]
    for name, tokenizer, config_class, model_class, pooling, extra in specs:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        config = config_class(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, **SIZES, **extra)
        torch.manual_seed(0)
        model_class(config, add_pooling_layer=False).save_pretrained(folder)
        tokenizer.save(str(folder / "tokenizer.json"))
        write_sentence_modules(folder, pooling, max_seq_length=128)
        if name == "tiny-mpnet":  # without it, transformers' MPNetTokenizer looks for BERT's [UNK]
            write_mpnet_tokenizer_config(folder)
        report(folder, tokenizer)
    # Qwen3-Embedding's post-processor appends the end-of-text token, the one padding uses too
    folder, tokenizer = out / "tiny-qwen3-embedding", byte_level_tokenizer([EOT], f"$A {EOT}")
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.Qwen3Config(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, **SIZES,
                                      num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                                      eos_token_id=tokenizer.token_to_id(EOT))
    torch.manual_seed(0)
    transformers.Qwen3Model(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_qwen3_embedding_files(folder)
    report(folder, tokenizer)
    build_distilbert(out)
    build_nomic_bert(out)
    build_gte(out)
    build_jina_v3(out)
    build_decoders(out)
    build_local_global(out)


def build_distilbert(out: Path) -> None:
    """DistilBERT (msmarco-distilbert's family): BERT's tokenizer, its own config names, mean pooling."""
    import transformers

    folder, tokenizer = out / "tiny-distilbert", bert_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.DistilBertConfig(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2,
                                           dim=SIZES["hidden_size"], n_layers=SIZES["num_hidden_layers"],
                                           n_heads=SIZES["num_attention_heads"], hidden_dim=SIZES["intermediate_size"],
                                           max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    transformers.DistilBertModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_sentence_modules(folder, "mean", max_seq_length=128)
    report(folder, tokenizer)


def build_nomic_bert(out: Path) -> None:
    """NomicBERT (nomic-embed-text's family): BERT's tokenizer, mean pooling, nomic-embed's prompts; transformers
    saves q, k and v fused (Wqkv), as the Hub's folders hold them."""
    import transformers

    folder, tokenizer = out / "tiny-nomic-bert", bert_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.NomicBertConfig(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, **SIZES,
                                          max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(0)
    transformers.NomicBertModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_sentence_modules(folder, "mean", max_seq_length=512)
    write_prompts_and_tokenizer_config(folder, {"query": "search_query: ", "document": "search_document: "}, "[PAD]")
    report(folder, tokenizer)


def build_gte(out: Path) -> None:
    """GTE (gte-multilingual-base's family): XLM-R's tokenizer, CLS pooling; transformers saves q, k, v and up, gate
    fused (qkv_proj, up_gate_proj), as the Hub's folders hold them."""
    import transformers

    folder, tokenizer = out / "tiny-gte", xlmr_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.GteConfig(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, **SIZES,
                                    max_position_embeddings=512, type_vocab_size=1, pad_token_id=1)
    torch.manual_seed(0)
    transformers.GteModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_sentence_modules(folder, "cls", max_seq_length=512)
    report(folder, tokenizer)


def build_jina_v3(out: Path) -> None:
    """jina-embeddings-v3 (without its task adapters): XLM-R's tokenizer, mean pooling; transformers saves q, k, v
    fused (mixer.Wqkv), as the Hub's folders hold them."""
    import transformers

    folder, tokenizer = out / "tiny-jina-v3", xlmr_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.JinaEmbeddingsV3Config(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2,
                                                 **SIZES, max_position_embeddings=514, pad_token_id=1)
    torch.manual_seed(0)
    transformers.JinaEmbeddingsV3Model(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_sentence_modules(folder, "mean", max_seq_length=512)
    report(folder, tokenizer)


def build_decoders(out: Path) -> None:
    """Llama, Qwen2 (gte-Qwen2's family) and Mistral (e5-mistral's, with a window of 8 tokens so the tests cross it):
    Qwen3-Embedding's tokenizer and sentence-transformers files, last-token pooling."""
    import transformers

    specs = [("tiny-llama", transformers.LlamaConfig, transformers.LlamaModel, {}),
             ("tiny-qwen2", transformers.Qwen2Config, transformers.Qwen2Model, {}),
             ("tiny-mistral", transformers.MistralConfig, transformers.MistralModel, dict(sliding_window=8))]
    for name, config_class, model_class, extra in specs:
        folder, tokenizer = out / name, byte_level_tokenizer([EOT], f"$A {EOT}")
        folder.mkdir(parents=True, exist_ok=True)
        config = config_class(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2, **SIZES,
                              num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                              eos_token_id=tokenizer.token_to_id(EOT), **extra)
        torch.manual_seed(0)
        model_class(config).save_pretrained(folder)
        tokenizer.save(str(folder / "tokenizer.json"))
        write_qwen3_embedding_files(folder)
        report(folder, tokenizer)


def report(folder: Path, tokenizer: Tokenizer) -> None:
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: vocab {tokenizer.get_vocab_size()}, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "weights")
    build(parser.parse_args().out)
