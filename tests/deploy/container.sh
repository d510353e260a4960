#!/usr/bin/env bash
# Checks deploy/container/Dockerfile without a Docker engine: what each stage would do, done here.
#
#   1. the Dockerfile: a builder stage on rust:<toolchain>-bookworm running CI's build
#      (cargo build --release --locked -p <the package of the `tessera` binary>), a runtime stage on
#      debian:bookworm-slim that installs nothing but ca-certificates and the HDF5 runtime, copies only the binary from
#      the builder, runs as a numeric non-root USER (10001) with ENTRYPOINT ["tessera"];
#      .dockerignore keeps .git (the recorded commit) and drops target/;
#   2. the binary (TESSERA_BIN, default target/debug/tessera: the release build links the same
#      libraries) needs only shared libraries that bookworm-slim has or the runtime stage installs, at glibc/libstdc++ symbol
#      versions bookworm's have;
#   3. the binary runs as uid/gid 10001 with no supplementary groups (setpriv), from a copy laid
#      out as in the image: --version, a small `simulate` into a directory it owns, and a
#      coordinator (state in a directory it owns, as /state) that serves, answers metrics and
#      exits 0 on SIGTERM, with a worker that drains and exits 0 on SIGTERM.
# Needs: bash, python3, readelf (binutils), setpriv (util-linux), curl. Run as root (setpriv).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DOCKERFILE=deploy/container/Dockerfile
BIN=${TESSERA_BIN:-target/debug/tessera}
IMAGE_UID=10001
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

[ -f "$DOCKERFILE" ] || { echo "FAIL: no $DOCKERFILE" >&2; exit 1; }
[ -x "$BIN" ] || { echo "FAIL: no binary at $BIN (build it, or set TESSERA_BIN)" >&2; exit 1; }
for tool in readelf setpriv python3 curl; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is needed" >&2; exit 1; }
done

echo "== 1. the Dockerfile"
# The binary's package and the toolchain, from the workspace.
PKG=$(python3 - <<'PY'
import tomllib
c = tomllib.load(open("crates/cli/Cargo.toml", "rb"))
bins = [b["name"] for b in c.get("bin", [])]
assert "tessera" in bins, f"crates/cli has no [[bin]] tessera: {bins}"
print(c["package"]["name"])
PY
)
ok "the tessera binary is package $PKG"
# Parse the stages: FROM (with ARG defaults resolved), RUN, COPY, USER, ENTRYPOINT, WORKDIR.
python3 - "$DOCKERFILE" "$PKG" "$IMAGE_UID" <<'PY' || failures=$((failures + 1))
import json, re, shlex, subprocess, sys
path, pkg, uid = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
# Join continuation lines, drop comments.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if not cur and (not s or s.startswith("#")):
        continue
    if s.startswith("#"):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
args, stages = {}, []
for l in lines:
    instr, _, rest = l.partition(" ")
    instr = instr.upper()
    if instr == "ARG" and not stages:
        k, _, v = rest.partition("=")
        args[k.strip()] = v.strip()
    elif instr == "FROM":
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda g: args.get(g.group(1) or g.group(2), ""), m.group(1))
        stages.append({"image": image, "name": m.group(2), "cmds": []})
    elif stages:
        stages[-1]["cmds"].append((instr, rest))
bad = []
def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, file=sys.stdout if cond else sys.stderr)
    if not cond:
        bad.append(msg)
check(len(stages) == 2, f"two stages (builder, runtime): {[s['name'] for s in stages]}")
builder, runtime = stages[0], stages[-1]
# Builder: rust:<this toolchain>-bookworm, CI's cargo build.
cargo = subprocess.run(["cargo", "--version"], capture_output=True, text=True).stdout if \
    subprocess.run(["sh", "-c", "command -v cargo"], capture_output=True).returncode == 0 else ""
m = re.match(r"rust:(\d+)\.(\d+)(?:\.\d+)?-bookworm$", builder["image"])
check(bool(m), f"builder image {builder['image']} is rust:X.Y-bookworm (the runtime's Debian release)")
if m and cargo:
    cv = re.search(r"cargo (\d+)\.(\d+)", cargo)
    check(cv and cv.groups() == m.groups(), f"builder toolchain {m.group(1)}.{m.group(2)} is the one here ({cargo.strip()})")
import tomllib
ws = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]
if m:
    need = tuple(int(x) for x in ws["rust-version"].split(".")[:2])
    check((int(m.group(1)), int(m.group(2))) >= need, f"builder toolchain >= the workspace's rust-version {ws['rust-version']}")
runs = [r for i, r in builder["cmds"] if i == "RUN"]
build = [r for r in runs if "cargo build" in r]
check(len(build) == 1, "the builder runs one cargo build")
if build:
    toks = shlex.split(build[0].split("cargo build", 1)[1].split("&&")[0])
    flags = set(toks)
    check({"--release", "--locked"} <= flags, f"cargo build --release --locked ({' '.join(toks)})")
    check("-p" in toks and toks[toks.index("-p") + 1] == pkg, f"cargo build -p {pkg}")
ci = open(".ci/run").read() + open("scripts/test.sh").read()
ci_cargo = [l.strip() for l in ci.splitlines() if re.match(r"\s*(exec\s+)?cargo (build|test|clippy)", l)]
check(ci_cargo and all("--locked" in l for l in ci_cargo), f"CI's cargo commands build --locked too: {ci_cargo}")
# Runtime: debian:bookworm-slim, only ca-certificates and libhdf5, the binary from the builder, non-root.
check(runtime["image"] == "debian:bookworm-slim", f"runtime image {runtime['image']} is debian:bookworm-slim")
installs = []
for i, r in runtime["cmds"]:
    if i == "RUN":
        for part in re.split(r"&&|;", r):
            w = shlex.split(part)
            if "install" in w and w and w[0] in ("apt-get", "apt"):
                installs += [x for x in w[w.index("install") + 1:] if not x.startswith("-")]
check(installs == ["ca-certificates", "libhdf5-103-1"],
      f"the runtime stage installs only ca-certificates and the HDF5 runtime library: {installs}")
tools = re.compile(r"\b(gcc|g\+\+|clang|cargo|rustc|rustup|make|build-essential|cmake|pkg-config)\b")
check(not any(tools.search(r) for i, r in runtime["cmds"] if i == "RUN"), "no build tools in the runtime stage")
copies = [r for i, r in runtime["cmds"] if i == "COPY"]
check(copies and all(c.startswith(f"--from={builder['name']}") for c in copies), f"the runtime copies only from the builder: {copies}")
check(any(c.split()[-1] == "/usr/local/bin/tessera" for c in copies), "the binary lands at /usr/local/bin/tessera (on PATH)")
users = [r for i, r in runtime["cmds"] if i == "USER"]
check(bool(users) and users[-1].split(":")[0] == uid and all(p.isdigit() and int(p) != 0 for p in users[-1].split(":")),
      f"USER {users[-1] if users else None} is numeric and non-root (uid {uid}; Kubernetes runAsNonRoot needs a number)")
user_lines = " ".join(r for i, r in runtime["cmds"] if i == "RUN")
check(f"--uid {uid}" in user_lines and f"--gid {uid}" in user_lines, f"the runtime stage creates user and group {uid}")
eps = [r for i, r in runtime["cmds"] if i == "ENTRYPOINT"]
check(bool(eps) and json.loads(eps[-1]) == ["tessera"], f'ENTRYPOINT ["tessera"]: {eps}')
check(any(i == "WORKDIR" for i, _ in runtime["cmds"]), "the runtime stage sets a WORKDIR")
sys.exit(1 if bad else 0)
PY
if [ -f .dockerignore ]; then
    python3 - <<'PY' || failures=$((failures + 1))
import subprocess, sys
pats = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
bad = []
if any(p.strip("/") in (".git", ".git/**") for p in pats):
    bad.append(".dockerignore drops .git: the image's binary would record commit `unknown`")
if "target/" not in pats and "target" not in pats:
    bad.append(".dockerignore keeps target/ (gigabytes of build output in the context)")
# Excluding a tracked file would mark the build -dirty: every pattern must match only untracked files.
tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True).stdout.split()
import fnmatch
for p in pats:
    q = p.rstrip("/")
    hits = [t for t in tracked if fnmatch.fnmatch(t, q) or fnmatch.fnmatch(t, q + "/*")
            or (q.startswith("**/") and (fnmatch.fnmatch(t, q[3:]) or fnmatch.fnmatch(t, "*/" + q[3:])
                                         or fnmatch.fnmatch(t, q[3:] + "/*") or fnmatch.fnmatch(t, "*/" + q[3:] + "/*")))]
    if hits:
        bad.append(f".dockerignore pattern {p} drops tracked files ({hits[:3]}): the recorded commit would read -dirty")
for b in bad:
    print("FAIL: " + b, file=sys.stderr)
if not bad:
    print("ok: .dockerignore keeps .git and tracked files, drops target/")
sys.exit(1 if bad else 0)
PY
fi

echo "== 2. shared libraries ($BIN)"
# What debian:bookworm-slim provides: libc6 (libc, libm, libdl, libpthread, librt, the loader),
# libgcc-s1 and libstdc++6 (apt, which the slim image keeps, depends on both). Nothing else.
BOOKWORM_SLIM_LIBS="libc.so.6
libm.so.6
libdl.so.2
libpthread.so.0
librt.so.1
libutil.so.1
ld-linux-x86-64.so.2
ld-linux-aarch64.so.1
libgcc_s.so.1
libstdc++.so.6"
needed=$(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "readelf found no NEEDED entries in $BIN"
runtime_stage=$(awk '/^FROM .* AS runtime/,0' "$DOCKERFILE")
for lib in $needed; do
    if printf '%s\n' "$BOOKWORM_SLIM_LIBS" | grep -qxF "$lib"; then
        ok "needs $lib (in bookworm-slim)"
        continue
    fi
    # Another library: the Debian package that ships it here must be installed by the runtime stage.
    pkg=$(dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1 || true)
    if [ -n "$pkg" ] && printf '%s\n' "$runtime_stage" | grep -qw -- "$pkg"; then
        ok "needs $lib (package $pkg, installed by the runtime stage)"
    else
        fail "$BIN needs $lib (package ${pkg:-unknown}), which debian:bookworm-slim lacks and the runtime stage does not install"
    fi
done
# Symbol versions: bookworm has glibc 2.36 and libstdc++ from GCC 12 (GLIBCXX_3.4.30).
python3 - "$BIN" <<'PY' || failures=$((failures + 1))
import re, subprocess, sys
out = subprocess.run(["readelf", "-V", "--wide", sys.argv[1]], capture_output=True, text=True).stdout
limits = {"GLIBC": (2, 36), "GLIBCXX": (3, 4, 30), "CXXABI": (1, 3, 13), "GCC": (12, 0, 0)}
bad = []
for name in limits:
    vs = {tuple(int(x) for x in v.split(".")) for v in re.findall(rf"Name: {name}_([0-9.]+)\b", out)}
    if vs:
        top = max(vs)
        okv = top <= limits[name]
        print(("ok: " if okv else "FAIL: ") + f"newest {name} symbol version needed {'.'.join(map(str, top))} (bookworm: {'.'.join(map(str, limits[name]))})")
        bad += [] if okv else [name]
sys.exit(1 if bad else 0)
PY

echo "== 3. running as uid $IMAGE_UID"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    cd "$ROOT"
    rm -rf "$WORK"
}
trap cleanup EXIT
# The image's layout: the binary root-owned at /usr/local/bin, a workdir and a state dir owned by
# the user.
mkdir -p "$WORK/usr/local/bin" "$WORK/work" "$WORK/state" "$WORK/secrets"
cp "$BIN" "$WORK/usr/local/bin/tessera"
chmod 0755 "$WORK" "$WORK/usr" "$WORK/usr/local" "$WORK/usr/local/bin" "$WORK/usr/local/bin/tessera"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/secrets/token"
chown -R "$IMAGE_UID:$IMAGE_UID" "$WORK/work" "$WORK/state"
chmod 0755 "$WORK/secrets"; chmod 0644 "$WORK/secrets/token"
# env and setpriv exec: a background AS_USER's $! is the tessera process itself.
AS_USER=(env -i PATH="$WORK/usr/local/bin:/usr/bin:/bin" HOME="$WORK/work"
    setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups --)
as_user() { (cd "$WORK/work" && exec "${AS_USER[@]}" "$@"); }
cd "$WORK/work"
if v=$(as_user tessera --version) && [ "$(as_user id -u)" = "$IMAGE_UID" ]; then
    ok "tessera --version as uid $IMAGE_UID: $v"
else
    fail "tessera --version as uid $IMAGE_UID"
fi
if as_user tessera simulate -o "$WORK/work/rec.zarr" --frames 120 --height 64 --width 64 >/dev/null \
    && [ "$(stat -c %u "$WORK/work/rec.zarr")" = "$IMAGE_UID" ]; then
    ok "tessera simulate as uid $IMAGE_UID into a directory it owns"
else
    fail "tessera simulate as uid $IMAGE_UID"
fi
if as_user tessera simulate -o "$WORK/usr/denied.zarr" --frames 8 --height 32 --width 32 >/dev/null 2>&1; then
    fail "uid $IMAGE_UID could write into a root-owned directory: not really running unprivileged"
else
    ok "uid $IMAGE_UID cannot write into root-owned directories"
fi
# A coordinator and a worker as in deploy/k8s (ephemeral loopback ports instead of 7070/9090).
"${AS_USER[@]}" tessera coordinator --listen 127.0.0.1:0 --state "$WORK/state/state.db" \
    --token-file "$WORK/secrets/token" --metrics 127.0.0.1:0 >"$WORK/coord.out" 2>"$WORK/coord.err" &
COORD=$!; PIDS+=("$COORD")
for _ in $(seq 100); do grep -q '^metrics on' "$WORK/coord.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/^tessera coordinator listening on //p' "$WORK/coord.out")
metrics=$(sed -n 's|^metrics on ||p' "$WORK/coord.out")
if [ -n "$grpc" ] && [ -n "$metrics" ] && curl -fsS "$metrics" | grep -q '^# TYPE'; then
    ok "coordinator as uid $IMAGE_UID serves gRPC on $grpc and metrics on $metrics"
else
    fail "coordinator as uid $IMAGE_UID did not start: $(cat "$WORK/coord.err")"
fi
if [ "$(stat -c %u "$WORK/state/state.db" 2>/dev/null)" = "$IMAGE_UID" ]; then
    ok "state database created by uid $IMAGE_UID"
else
    fail "no state database written by uid $IMAGE_UID in the state directory"
fi
"${AS_USER[@]}" tessera worker --coordinator "http://$grpc" --token-file "$WORK/secrets/token" --slots 1 \
    --name test/worker >"$WORK/worker.out" 2>"$WORK/worker.err" &
WORKER=$!; PIDS+=("$WORKER")
for _ in $(seq 50); do grep -q 'polling' "$WORK/worker.err" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
kill -TERM "$WORKER" 2>/dev/null || true
rc=0; wait "$WORKER" || rc=$?
if [ "$rc" = 0 ] && grep -q 'worker stopped' "$WORK/worker.err"; then
    ok "worker as uid $IMAGE_UID drains and exits 0 on SIGTERM"
else
    fail "worker as uid $IMAGE_UID: exit $rc on SIGTERM: $(tail -3 "$WORK/worker.err")"
fi
kill -TERM "$COORD" 2>/dev/null || true
rc=0; wait "$COORD" || rc=$?
if [ "$rc" = 0 ]; then
    ok "coordinator exits 0 on SIGTERM"
else
    fail "coordinator exit $rc on SIGTERM: $(tail -3 "$WORK/coord.err")"
fi

echo
if [ "$failures" -gt 0 ]; then
    echo "container checks: $failures failed" >&2
    exit 1
fi
echo "container checks: all passed"
