#!/usr/bin/env bash
# Builds the virtual environments of the peers that scripts/bench.py compares minienc with: sentence-transformers
# on its ONNX Runtime and OpenVINO backends. They live apart from the test environment because their pins clash
# with it (the ONNX extra holds transformers below 4.58, the OpenVINO one below 5.6); the benchmark drives each
# through scripts/peer_worker.py, run with that venv's python. A third holds FlagEmbedding (its imports fail under
# transformers 5), which tests/test_m3.py runs where MINIENC_FLAGEMBEDDING_PYTHON names ROOT/flagembedding/bin/python.
#
#     scripts/peers.sh [ROOT [NAME...]]   # ROOT defaults to ~/.cache/minienc-peers; makes ROOT/onnx, openvino and
#                                         # flagembedding, or the NAMEs given
#
# Safe to rerun: a venv that already loads its backend is kept as it is (delete its folder to rebuild it).
set -euo pipefail

root="${1:-$HOME/.cache/minienc-peers}"
names=("${@:2}")
[[ ${#names[@]} -gt 0 ]] || names=(onnx openvino flagembedding)
# The CPU build of torch. Installed first and pinned in every later install: a bare `torch` requirement, or
# torchvision's newest release (which needs torch 2.14), would otherwise pull a CUDA build of several GB.
torch_pin="torch==2.13.0"
# optimum-intel requires torchvision, whose newest release needs torch 2.14; 0.28.0 is the one made for torch 2.13.0
torchvision_pin="torchvision==0.28.0"

# build NAME CHECK REQUIREMENT...: ROOT/NAME with the requirements installed, unless its python already runs CHECK
build() {
    local name="$1" check="$2" venv="$root/$1"
    shift 2
    [[ " ${names[*]} " == *" $name "* ]] || return 0
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
        echo "$name: $venv already loads its backend; kept"
        return
    fi
    echo "$name: building $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "$torch_pin"
    "$venv/bin/python" -m pip install --quiet "$torch_pin" "$@"
    if [[ "$name" == openvino ]]; then
        # PyPI's torchvision is built against CUDA torch: beside the CPU build, transformers' import of it fails
        # ("operator torchvision::nms does not exist"). Only vision models use it, so it goes (pip check will then
        # report optimum-intel's requirement as unmet).
        "$venv/bin/python" -m pip uninstall --quiet --yes torchvision
    fi
    "$venv/bin/python" -c "$check"
}

# show NAME: the versions installed in ROOT/NAME (read from package metadata, which is fast) and its size
show() {
    local venv="$root/$1"
    [[ " ${names[*]} " == *" $1 "* ]] || return 0
    "$venv/bin/python" - "$1" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

packages = ["sentence-transformers", "transformers", "torch", "optimum", "optimum-onnx", "onnxruntime", "onnx",
            "optimum-intel", "openvino", "nncf", "FlagEmbedding", "numpy"]
found = []
for package in packages:
    try:
        found.append(f"{package}=={version(package)}")
    except PackageNotFoundError:
        pass
print(f"{sys.argv[1]}:", " ".join(found))
PY
    echo "$1: $(du -sh "$venv" | cut -f1) on disk"
}

# each check imports the class that sentence-transformers loads the model with, and so transformers' model code
mkdir -p "$root"
build onnx "from optimum.onnxruntime import ORTModelForFeatureExtraction; import sentence_transformers" \
    "sentence-transformers[onnx]"
build openvino "from optimum.intel import OVModelForFeatureExtraction; import sentence_transformers" \
    "sentence-transformers[openvino]" "$torchvision_pin"
build flagembedding "from FlagEmbedding import BGEM3FlagModel" "FlagEmbedding==1.4.2" "transformers<4.58"
show onnx
show openvino
show flagembedding
