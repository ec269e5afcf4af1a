#!/bin/sh
# Creates the virtualenv $1 and installs trainlab[dev] into it, never letting pip choose a torch: unpinned,
# pip takes the newest release, a multi-GB CUDA build. $2 is the pin to install when no torch is there.
set -e
venv=$1
torch=$2
py=$venv/bin/python
# --system-site-packages lets .venv reuse a CUDA torch of the base interpreter. It shares that base's
# packages, never an activated virtualenv's, so only .venv's own python can say whether torch is there.
# Without one, .venv starts again isolated, so that no other package of the base leaks in.
python3 -m venv --system-site-packages "$venv"
if ! "$py" -c 'import torch' 2>/dev/null; then
	rm -rf "$venv"
	python3 -m venv "$venv"
	"$py" -m pip install -q "$torch"
fi
echo "torch==$("$py" -c 'import torch; print(torch.__version__)')" >"$venv/constraints.txt"
"$py" -m pip install -q -c "$venv/constraints.txt" -e '.[dev]'
