# Sourced by the scripts: system packages the build needs, and a cargo target dir outside the clone
# so that repeated runs (and CI on the same machine) build incrementally.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)   # lance's build scripts
command -v cc >/dev/null 2>&1 || need+=(gcc)                       # tree-sitter grammars, onig
if [ "$(uname -s)" = Linux ]; then
  command -v mold >/dev/null 2>&1 || need+=(mold)                  # links the daemon several times faster
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "hgd: installing ${need[*]}" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
  elif command -v brew >/dev/null 2>&1; then
    brew install protobuf >&2
  else
    echo "hgd: please install: ${need[*]}" >&2
    exit 2
  fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hgd/target}"
if [ "$(uname -s)" = Linux ] && [ -z "${RUSTFLAGS:-}" ]; then
  # Keep this string identical across scripts: a different RUSTFLAGS rebuilds everything.
  export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
HGD_BIN="$CARGO_TARGET_DIR/debug"
export HGD_BIN

# Builds every binary (cargo options such as --quiet pass through). On Linux, where glibc's
# static library is installed, the client is linked statically (static-pie): without the dynamic
# loader and its three shared libraries it starts ~0.5 ms sooner, a fixed part of every search
# (BENCHMARKS.md, session 11). Only the client: the daemon loads ONNX Runtime with dlopen, which
# needs the dynamic loader. The client's one NSS call (the home folder from the user database,
# only when HOME is unset) then loads the system's NSS modules, which must match the glibc it was
# linked with. The daemon is built with the whole workspace selected, so its dependencies get the
# same features as in `cargo test --workspace` and are not compiled twice.
hgd_build() {
  cargo build --workspace --bin hgd-daemon "$@" || return
  if [ "$(uname -s)" = Linux ]; then
    # cc prints the bare name when it has no such file.
    case "$(cc -print-file-name=libc.a 2>/dev/null)" in
      /*)
        cargo rustc -p hgd --bin hgd "$@" -- -C target-feature=+crt-static && return
        echo "hgd: linking the client statically failed; linking it dynamically" >&2
        ;;
    esac
  fi
  cargo build -p hgd --bin hgd "$@"
}
