"""Make PyPI's CUDA build of torch import and run on the CPU without the nvidia-* wheels.

PyPI only ships Linux x86_64 torch built against CUDA; its libraries name about a dozen CUDA
libraries (several GB of nvidia-* wheels) as NEEDED, so `import torch` fails without them.
This writes stand-in libraries with those sonames into torch/lib (on torch's rpath) that
define every symbol torch takes from them. Each stand-in function returns 100
(cudaErrorNoDevice), so torch sees no GPU (torch.cuda.is_available() is False) and every
CPU path runs the real code. Nothing CUDA may be called through them: on a CPU nothing is.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

STUB_C = """/* stand-in for %(soname)s: torch on a CPU-only machine (tests/interop/cuda_stubs.py) */
static const char no_device[] = "no CUDA device (CPU-only torch, stand-in %(soname)s)";
const char *sf_stub_error_string(void) { return no_device; }
long sf_stub_no_device(void) { return 100; }
"""


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit("cuda_stubs: %s failed: %s" % (" ".join(cmd), res.stderr.strip()[:300]))
    return res.stdout


def needed(lib):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run(["readelf", "-d", lib]))


# The C/C++ runtime torch may take from the system; every other library it names that is not
# in torch/lib is CUDA's, and gets a stand-in even where a CUDA toolkit is installed, so the
# result does not depend on which toolkit (if any) the machine has.
BASE = {"libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libgcc_s.so.1",
        "libstdc++.so.6", "ld-linux-x86-64.so.2", "libutil.so.1", "libz.so.1", "libquadmath.so.0"}


def system_libs():
    """soname -> path of the BASE libraries as the dynamic linker finds them."""
    found = {}
    for line in run(["ldconfig", "-p"]).splitlines():
        m = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
        if m and m.group(1) in BASE and "x86-64" in m.group(2) and m.group(1) not in found:
            found[m.group(1)] = m.group(3)
    return found


def version_files(lib):
    """version name -> the library file lib expects it from (its .gnu.version_r)."""
    out, current = {}, None
    for line in run(["readelf", "-V", "--wide", lib]).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and current:
            out[m.group(1)] = current
    return out


def dyn_symbols(lib, undefined):
    """(name, version or None, weak) of the dynamic symbols lib defines or lacks."""
    flag = "--undefined-only" if undefined else "--defined-only"
    out = []
    for line in run(["nm", "-D", flag, "--with-symbol-versions", lib]).splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, sym = parts[-2], parts[-1]
        name, _, ver = sym.partition("@")
        out.append((name, ver.lstrip("@") or None, kind in ("w", "v")))
    return out


def plan(torch_lib):
    """soname -> {symbol: version} for the libraries torch needs and this machine lacks."""
    libs = sorted(glob.glob(os.path.join(torch_lib, "*.so*")) +
                  glob.glob(os.path.join(torch_lib, "..", "_C*.so")))
    present = {os.path.basename(p) for p in libs}
    system = system_libs()
    missing = set()
    for lib in libs:
        missing.update(s for s in needed(lib) if s not in present and s not in BASE)
    if not missing:
        return {}
    defined = set()
    for lib in libs:
        defined.update(name for name, _, _ in dyn_symbols(lib, False))
    for soname in set().union(*(needed(lib) for lib in libs)):
        if soname in system:
            defined.update(name for name, _, _ in dyn_symbols(system[soname], False))
    stubs = {s: {} for s in sorted(missing)}
    loose = sorted(missing)[0]  # unversioned symbols: any stand-in may define them
    for lib in libs:
        files = version_files(lib)
        for name, ver, weak in dyn_symbols(lib, True):
            if weak or name in defined:
                continue
            if files.get(ver) in stubs:
                stubs[files[ver]][name] = ver
            else:
                stubs[loose].setdefault(name, None)
    return stubs


def build(torch_lib, soname, symbols, cc):
    with tempfile.TemporaryDirectory() as tmp:
        src, vs = os.path.join(tmp, "stub.c"), os.path.join(tmp, "stub.map")
        with open(src, "w") as f:
            f.write(STUB_C % {"soname": soname})
            for name in sorted(symbols):
                target = "sf_stub_error_string" if re.search(r"Error(String|Name)$", name) else "sf_stub_no_device"
                f.write('extern __typeof__(%s) %s __attribute__((alias("%s")));\n' % (target, name, target))
        versions = sorted({v for v in symbols.values() if v})
        with open(vs, "w") as f:
            for v in versions:
                names = sorted(n for n, nv in symbols.items() if nv == v)
                f.write("%s { global: %s; };\n" % (v, "; ".join(names)))
            f.write("SF_STUB { global: *; };\n" if versions else "{ global: *; };\n")
        out = os.path.join(torch_lib, soname)
        run([cc, "-shared", "-fPIC", "-O0", "-o", out + ".tmp", src, "-Wl,-soname," + soname,
             "-Wl,--version-script=" + vs])
        os.replace(out + ".tmp", out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("torch_dir", help="the installed torch package (the folder holding __init__.py and lib/)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (default: $CC or cc)")
    args = ap.parse_args()
    torch_lib = os.path.join(args.torch_dir, "lib")
    if not os.path.isdir(torch_lib):
        sys.exit("cuda_stubs: %s has no lib/ folder; give the torch package folder" % args.torch_dir)
    stubs = plan(torch_lib)
    for soname, symbols in stubs.items():
        build(torch_lib, soname, symbols, args.cc)
        print("cuda_stubs: %s (%d symbols)" % (soname, len(symbols)))
    if not stubs:
        print("cuda_stubs: nothing missing")


if __name__ == "__main__":
    main()
