"""The same embedding job as `hgd-daemon embed --bench`, in Python onnxruntime, for a side-by-side figure.

Same model, same tokenizer settings (truncate at max_tokens, no fixed padding), same intra-op threads,
same batch order (texts sorted by token length, cut into batches, each padded to its longest text),
mean/CLS pooling and L2 normalisation in numpy.

    python3 bench/embed_python.py TEXTS.json --model-dir DIR --threads 2 --batch-size 32 [--vectors OUT.json]
"""
import argparse
import json
import time
import tomllib

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("texts")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-batch-tokens", type=int, default=512)
    ap.add_argument("--vectors", help="write the vectors (input order) here as JSON")
    args = ap.parse_args()

    texts = json.load(open(args.texts))
    config = tomllib.load(open(f"{args.model_dir}/model.toml", "rb"))
    tok = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=config["max_tokens"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(f"{args.model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}

    start = time.perf_counter()
    prefix = config.get("doc_prefix", "")
    encodings = tok.encode_batch([prefix + t for t in texts])
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    out = [None] * len(texts)
    batches, rest = [], order
    while rest:
        # Same rule as hgd: grow while the padded size stays within the token budget.
        n = 1
        while n < len(rest) and n < args.batch_size and (n + 1) * len(encodings[rest[n]].ids) <= args.max_batch_tokens:
            n += 1
        batches.append(rest[:n])
        rest = rest[n:]
    for batch in batches:
        seq = max(len(encodings[i].ids) for i in batch)
        ids = np.zeros((len(batch), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for r, i in enumerate(batch):
            e = encodings[i]
            n = len(e.ids)
            ids[r, :n] = e.ids
            mask[r, :n] = 1
            types[r, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in input_names:
            feed["token_type_ids"] = types
        hidden = sess.run(None, feed)[0]
        if hidden.ndim == 3:
            if config["pooling"] == "cls":
                pooled = hidden[:, 0]
            else:
                m = mask[:, :, None].astype(np.float32)
                pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1)
        else:
            pooled = hidden
        pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        for r, i in enumerate(batch):
            out[i] = pooled[r]
    secs = time.perf_counter() - start
    print(
        f"Python onnxruntime {ort.__version__}: {len(texts)} texts in {secs:.2f}s = "
        f"{len(texts) / secs:.1f} texts/s ({args.threads} threads, batch {args.batch_size}, {args.max_batch_tokens} tokens)"
    )
    if args.vectors:
        json.dump([v.tolist() for v in out], open(args.vectors, "w"))


if __name__ == "__main__":
    main()
