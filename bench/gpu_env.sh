# Sourced by the GPU scripts: puts the GPU machine's torch venv libraries on the library path
# (torch 2.11.0+cu130 in /opt/torch/.venv, or TORCH_VENV) so a binary built here runs there.
venv=${TORCH_VENV:-/opt/torch/.venv}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
LD_LIBRARY_PATH="$site/torch/lib$(printf ':%s' "$site"/nvidia/*/lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
