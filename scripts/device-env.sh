# Source on a GPU machine without package access: use the libraries unpacked in .devdeps/.
_r="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.devdeps/root"
export PKG_CONFIG_PATH="$_r/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$_r/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$_r/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CPATH="$_r/usr/include${CPATH:+:$CPATH}"
unset _r
