"""Generates the Python gRPC stubs of nvfp4.v1 from proto/ with grpcio-tools.

    python client/python/generate_stubs.py OUT_DIR            # OUT_DIR/nvfp4/v1/quantizer_pb2{,_grpc}.py
    python client/python/generate_stubs.py --package PKG_DIR  # PKG_DIR/quantizer_pb2{,_grpc}.py{,i}

The first form (`generate`) writes the stubs under their proto path; import them with OUT_DIR on
sys.path (tests/integration/fault_test.py does). The second (`generate_package`) is what the wheel
ships as `nvfp4_client._proto` (setup.py runs it at build time): the same files with relative
imports and `.pyi` type stubs. The stubs are build outputs, regenerated whenever proto/ changes
and never committed.

The .proto files are looked up in $NVFP4_PROTO_ROOT, then ./proto beside this file (an sdist
carries them there), then ../../proto (the repository).
"""
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["nvfp4/v1/quantizer.proto"]


def proto_root():
    candidates = [os.environ.get("NVFP4_PROTO_ROOT", ""), os.path.join(HERE, "proto"),
                  os.path.normpath(os.path.join(HERE, "..", "..", "proto"))]
    for c in candidates:
        if c and all(os.path.isfile(os.path.join(c, p)) for p in PROTOS):
            return c
    raise FileNotFoundError("nvfp4 .proto files not found in " +
                            ", ".join(c for c in candidates if c))


PROTO_ROOT = proto_root()


def up_to_date(out_dir):
    for p in PROTOS:
        src = os.path.join(PROTO_ROOT, p)
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            dst = os.path.join(out_dir, p[: -len(".proto")] + suffix)
            if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
                return False
    return True


def _protoc(out_dir, pyi):
    from grpc_tools import protoc
    import grpc_tools

    os.makedirs(out_dir, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}"]
    if pyi:
        args.append(f"--pyi_out={out_dir}")
    args += [os.path.join(PROTO_ROOT, p) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(PROTOS))


def generate(out_dir):
    """Generates the stubs into `out_dir` unless they are newer than the .proto files."""
    if up_to_date(out_dir):
        return out_dir
    _protoc(out_dir, pyi=False)
    return out_dir


def generate_package(pkg_dir):
    """Writes the stubs as a flat package `pkg_dir` (quantizer_pb2.py, .pyi, quantizer_pb2_grpc.py,
    __init__.py) whose imports are relative, so they need no top-level `nvfp4` package.
    Returns the runtime requirements the generated code checks at import:
    {"grpcio": "1.x.y", "protobuf": "a.b.c"} (either may be missing for old grpcio-tools)."""
    tmp = tempfile.mkdtemp(prefix="nvfp4-stubs-")
    try:
        _protoc(tmp, pyi=True)
        os.makedirs(pkg_dir, exist_ok=True)
        versions = {}
        for p in PROTOS:
            stem = p[: -len(".proto")]
            src_dir = os.path.join(tmp, os.path.dirname(stem))
            module_path = os.path.dirname(stem).replace("/", ".")  # nvfp4.v1
            for name in sorted(os.listdir(src_dir)):
                with open(os.path.join(src_dir, name)) as f:
                    text = f.read()
                # `from nvfp4.v1 import quantizer_pb2 as ...` -> `from . import quantizer_pb2 as ...`
                text = re.sub(rf"^from {re.escape(module_path)} import ", "from . import ", text,
                              flags=re.M)
                m = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'", text, re.M)
                if m:
                    versions["grpcio"] = m.group(1)
                m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,"
                              r"\s*(\d+),\s*(\d+),\s*(\d+),", text)
                if m:
                    versions["protobuf"] = ".".join(m.groups())
                with open(os.path.join(pkg_dir, name), "w") as f:
                    f.write(text)
        with open(os.path.join(pkg_dir, "__init__.py"), "w") as f:
            f.write('"""Generated from proto/nvfp4/v1/quantizer.proto at build time (do not edit)."""\n')
        return versions
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--package":
        print(generate_package(sys.argv[2]))
    elif len(sys.argv) == 2:
        print(generate(sys.argv[1]))
    else:
        sys.exit(__doc__)
