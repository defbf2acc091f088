from setuptools import setup

setup(cffi_modules=["native/ffi_build.py:ffibuilder"])
