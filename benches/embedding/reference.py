"""Reference embeddings and speed of Python sentence-transformers on this machine, for comparison with
ragvault's candle embedder.

  python reference.py <model dir> fixture <out.json>   # writes the fixture crates/embedding/tests read
  python reference.py <model dir> speed <n> <batch>     # sentences/s over n generated manual sentences
  python reference.py <model dir> file <texts.jsonl> <batch>  # chunks/s over the texts of a file (a JSON string or
                                                              # {text} per line: `chunk_texts` writes a manual's)
  python reference.py <model dir> vectors <n> <out.f32>  # the same n sentences' vectors (little-endian f32,
                                                         # row-major, appended batch by batch) for the ANN runs

Runs on the CPU with all cores (torch's default threads).
"""
import json, os, sys, time
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "Hold the reset button for ten seconds until the lights blink amber.",
    "Error E-1042 means the impeller is blocked by debris.",
    "The replacement impeller is part AB-4471-X.",
    "Keep the heater one metre away from curtains.",
    "Wie setze ich das Gerät auf Werkseinstellungen zurück?",
    "a",
    "Before the first start, fill the pump housing with water through the priming port and close the cap "
    "hand-tight; then open the outlet valve slowly and wait until a steady stream of water appears. " * 6,
]

def manual_sentences(n):
    parts = ["pump", "router", "heater", "valve", "filter", "fan", "display", "battery"]
    actions = ["clean", "replace", "inspect", "reset", "tighten", "calibrate", "update", "remove"]
    return [
        f"Step {i}: {actions[i % 8]} the {parts[(i // 8) % 8]} every {i % 12 + 1} months, "
        f"and check that error code E-{1000 + i % 97} does not appear on the display afterwards."
        for i in range(n)
    ]

model = SentenceTransformer(sys.argv[1], device="cpu")
if sys.argv[2] == "fixture":
    vectors = model.encode(SENTENCES, normalize_embeddings=True)
    json.dump(
        {"model": "all-MiniLM-L6-v2", "source": "sentence-transformers " + __import__("sentence_transformers").__version__,
         "sentences": SENTENCES, "vectors": [[round(float(x), 7) for x in v] for v in vectors]},
        open(sys.argv[3], "w"), indent=None)
elif sys.argv[2] == "vectors":
    # The vectors ragvault's embedder gives (cosine >= 0.9999998, see crates/embedding/tests), 2.7x faster here:
    # this is how the 1M-point ANN run gets its vectors in about an hour instead of three.
    import numpy as np
    n, out = int(sys.argv[3]), sys.argv[4]
    done = os.path.getsize(out) // (384 * 4) if os.path.exists(out) else 0
    texts = manual_sentences(n)
    with open(out, "ab") as f:
        for start in range(done, n, 4096):
            vectors = model.encode(texts[start:start + 4096], batch_size=64, normalize_embeddings=True)
            f.write(np.asarray(vectors, dtype="<f4").tobytes())
            f.flush()
            print(f"{start + len(vectors)}/{n}", flush=True)
elif sys.argv[2] == "file":
    texts = [json.loads(line) for line in open(sys.argv[3])]
    texts = [t if isinstance(t, str) else t["text"] for t in texts]
    batch = int(sys.argv[4])
    model.encode(texts[:batch], batch_size=batch)  # warm-up
    t = time.perf_counter()
    model.encode(texts, batch_size=batch)
    print(f"sentence-transformers: {len(texts) / (time.perf_counter() - t):.1f} chunks/s ({len(texts)} texts, batch {batch})")
else:
    n, batch = int(sys.argv[3]), int(sys.argv[4])
    texts = manual_sentences(n)
    model.encode(texts[:batch], batch_size=batch)  # warm-up
    t = time.perf_counter()
    model.encode(texts, batch_size=batch)
    print(f"sentence-transformers: {n / (time.perf_counter() - t):.1f} sentences/s (batch {batch})")
