"""Build hook of the nvfp4-client package (metadata lives in pyproject.toml).

The gRPC stubs are generated from the .proto files at build time (generate_stubs.py: ./proto in an
sdist, else ../../proto of the repository) into `nvfp4_client/_proto` of the build tree, so the
wheel ships them and needs no grpcio-tools at run time. An sdist carries the .proto files.
The grpcio / protobuf lower bounds of the package are the versions the generated code checks at
import (the grpcio-tools used for the build decides them).
"""
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate_stubs  # noqa: E402

_VERSIONS = {}


def _generate(pkg_dir):
    _VERSIONS.update(generate_stubs.generate_package(pkg_dir))


def _requirements():
    """Runtime requirements: generates the stubs once into a scratch directory to learn which
    grpcio / protobuf they need."""
    if not _VERSIONS:
        import tempfile
        tmp = tempfile.mkdtemp(prefix="nvfp4-client-setup-")
        try:
            _generate(os.path.join(tmp, "_proto"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [f"grpcio>={_VERSIONS.get('grpcio', '1.62.0')}",
            f"protobuf>={_VERSIONS.get('protobuf', '4.25.0')}"]


class build_py(_build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(HERE, "src", "nvfp4_client", "_proto")
        else:
            target = os.path.join(self.build_lib, "nvfp4_client", "_proto")
        _generate(target)


class sdist(_sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for p in generate_stubs.PROTOS:
            dst = os.path.join(base_dir, "proto", p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(generate_stubs.PROTO_ROOT, p), dst)


setup(install_requires=_requirements(), cmdclass={"build_py": build_py, "sdist": sdist})
