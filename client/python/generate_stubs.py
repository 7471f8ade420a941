"""Generates the Python gRPC stubs of nvfp4.v1 from proto/ with grpcio-tools.

    python client/python/generate_stubs.py OUT_DIR

Writes OUT_DIR/nvfp4/v1/quantizer_pb2.py and quantizer_pb2_grpc.py (import them with OUT_DIR on
sys.path, or let nvfp4_client.py generate them on first use). The stubs are build outputs: they
are regenerated whenever proto/ changes and never committed.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["nvfp4/v1/quantizer.proto"]


def up_to_date(out_dir):
    for p in PROTOS:
        src = os.path.join(PROTO_ROOT, p)
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            dst = os.path.join(out_dir, p[: -len(".proto")] + suffix)
            if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
                return False
    return True


def generate(out_dir):
    """Generates the stubs into `out_dir` unless they are newer than the .proto files."""
    if up_to_date(out_dir):
        return out_dir
    from grpc_tools import protoc
    import grpc_tools

    os.makedirs(out_dir, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}"] + [os.path.join(PROTO_ROOT, p) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(PROTOS))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(generate(sys.argv[1]))
