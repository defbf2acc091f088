"""cffi builder for krait._native (out-of-line API mode).

The cdef is the marked block of native/include/krait.h plus the extern "Python" callbacks,
which are not C and so live here.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "include" / "krait.h"


def _cdef_block() -> str:
    text = HEADER.read_text()
    start = text.index("/* cdef:begin */") + len("/* cdef:begin */")
    end = text.index("/* cdef:end */")
    return text[start:end]


ffibuilder = FFI()
ffibuilder.cdef(_cdef_block())
ffibuilder.cdef(
    """
    extern "Python" void krait_py_event(void *ud, int kind, int a, int b);
    """
)
# Paths relative to the project root, where setuptools runs the build.
_sources = sorted(str(p.relative_to(HERE.parent)) for p in (HERE / "src").glob("*.c"))
ffibuilder.set_source(
    "krait._native",
    '#include "krait.h"',
    sources=_sources,
    include_dirs=["native/include", "native/src"],
    libraries=["ssl", "crypto", "z"],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
