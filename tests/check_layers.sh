#!/usr/bin/env bash
# The module graph drawn from the code's own includes: every file of src/<module>/ may include
# only the public headers of its own module and of the modules below it (DESIGN.md "Layout"),
# and private headers only of its own module. Prints the graph (module -> modules it uses) and
# every arrow that points up; exits 1 if there is one. Usage: check_layers.sh [SOURCE_DIR]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

# Bottom to top. A module may use the ones before it.
order=(core model telemetry ep backend cost route profile exp analyze cli)
rank() { local i; for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }

# Public header -> module: include/thermoe/<module>.h, one per module.
header_module() {
  local m=${1%.h}
  [ "$(rank "$m")" -ge 0 ] && { echo "$m"; return; }
  echo "?"
}

bad=0
declare -A uses
for dir in src/*/; do
  mod=$(basename "$dir")
  r=$(rank "$mod")
  if [ "$r" -lt 0 ]; then
    echo "src/$mod: not a module of the layout"; bad=1; continue
  fi
  while IFS=: read -r file inc; do
    case $inc in
      thermoe/*) dep=$(header_module "${inc#thermoe/}") ;;
      */*) dep=${inc%%/*}             # a private header of some module: "<module>/x.h"
           case $dep in cpu|cuda|nccl) dep=backend ;; esac ;;
      *.h|*.cuh) continue ;;           # a header beside the file
      *) continue ;;
    esac
    if [ "$dep" = "?" ]; then
      echo "$file: includes $inc, which is no module's header"; bad=1; continue
    fi
    [ "$dep" = "$mod" ] && continue
    dr=$(rank "$dep")
    if [ "$dr" -lt 0 ] || [ "$dr" -gt "$r" ]; then
      echo "$file: $mod -> $dep points up (includes $inc)"; bad=1
    elif [[ $inc != thermoe/* ]]; then
      echo "$file: includes $inc, a private header of $dep"; bad=1
    fi
    uses[$mod]="${uses[$mod]:-} $dep"
  done < <(grep -rHoE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^"]+"' "$dir" \
             --include='*.c' --include='*.h' --include='*.cu' --include='*.cuh' \
           | sed -E 's/:[[:space:]]*#[[:space:]]*include[[:space:]]+"([^"]+)"/:\1/; s#:(\.\./)+#:#')
done

# Headers too: include/thermoe/<m>.h may include only headers of modules below it.
for h in include/thermoe/*.h; do
  m=$(header_module "$(basename "$h")")
  if [ "$m" = "?" ]; then echo "$h: not named after a module"; bad=1; continue; fi
  while read -r inc; do
    dep=$(header_module "${inc#thermoe/}")
    [ "$dep" = "$m" ] && continue
    if [ "$dep" = "?" ] || [ "$(rank "$dep")" -gt "$(rank "$m")" ]; then
      echo "$h: $m -> $dep points up (includes $inc)"; bad=1
    fi
    uses[$m]="${uses[$m]:-} $dep"
  done < <(grep -oE '#include "thermoe/[^"]+"' "$h" | sed -E 's/#include "(.*)"/\1/')
done

echo "module graph from the includes (bottom first; each uses only modules to its left):"
for m in "${order[@]}"; do
  deps=$(tr ' ' '\n' <<<"${uses[$m]:-}" | sed '/^$/d' | sort -u | tr '\n' ' ')
  printf '  %-9s -> %s\n' "$m" "${deps:-(nothing)}"
done
exit $bad
