# Sourced by scripts/check and scripts/demo: the project's virtualenv, ./.venv.
#
# Everything Python goes into it, never into the system's Python: Debian 12 and Ubuntu 24.04
# refuse `pip install` outside a virtualenv (PEP 668), and their python3 makes one only with
# the python3-venv package (no ensurepip without it).

venv=.venv
python=${PYTHON:-python3}

# A virtualenv that works: made by `python3 -m venv`, with its pip (a run of `python3 -m venv`
# without ensurepip leaves a python and no pip behind).
venv_ok() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }

# Print the Debian package needed to make the virtualenv, if one is.
venv_package_needed() {
  venv_ok || "$python" -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
}

# Make ./.venv unless it works already (the package above must be there by now).
make_venv() {
  venv_ok && return 0
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "$0: '$python -m venv' needs Debian's python3-venv: sudo apt install python3-venv" >&2
    exit 1
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
}
