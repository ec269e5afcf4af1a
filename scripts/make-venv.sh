#!/bin/sh
# Creates the virtualenv $1 and installs trainlab[dev] into it, never letting pip choose a torch: unpinned,
# pip takes the newest release, a multi-GB CUDA build. $2 is the pin to install when no torch is there.
set -e
venv=$1
torch=$2
py=$venv/bin/python
sees_torch() { "$py" -c 'import torch' 2>/dev/null; }
# An isolated .venv first (an existing one keeps its own torch). Failing that, --system-site-packages, to
# reuse a CUDA torch of the base interpreter: that shares the base's packages, never an activated
# virtualenv's, so only .venv's own python can say whether a torch is there. Failing that, the pin.
python3 -m venv "$venv"
if ! sees_torch; then
	python3 -m venv --system-site-packages "$venv"
	if ! sees_torch; then
		python3 -m venv "$venv"
		"$py" -m pip install -q "$torch"
	fi
fi
echo "torch==$("$py" -c 'import torch; print(torch.__version__)')" >"$venv/constraints.txt"
"$py" -m pip install -q -c "$venv/constraints.txt" -e '.[dev]'
