#!/bin/sh
# Prune a care-serve venv for the serving image: prune-venv.sh VENV [EXTRAS]
# Removes what serving never imports: pip/setuptools, sympy+mpmath (onnxruntime requires them
# only for its offline tools) unless torch is installed (torch needs sympy), the offline tool
# packages of onnxruntime and its C-API library (libonnxruntime.so, for C/C++ programs: the Python
# module links the runtime statically; the import check below proves it), test suites, C headers
# and type stubs.
# Bytecode is compiled once here (the runtime root filesystem may be read-only).
set -eu
venv="$1"
extras="${2:-}"
py="$venv/bin/python"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

case ",$extras," in
    *,torch,*) ;;
    *) "$py" -m pip uninstall --yes --quiet sympy mpmath ;;
esac
"$py" -m pip uninstall --yes --quiet setuptools wheel 2>/dev/null || true
"$py" -m pip uninstall --yes --quiet pip

rm -rf "$site"/onnxruntime/tools "$site"/onnxruntime/transformers \
    "$site"/onnxruntime/quantization "$site"/onnxruntime/datasets \
    "$site"/onnxruntime/capi/libonnxruntime.so.*
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.c' -o -name '*.pxd' \) -delete
find "$site" -depth -type d -empty -delete

"$py" -m compileall -q -j 0 "$site" >/dev/null
# What serving imports, and an ONNX Runtime session (needs the runtime the pruning kept).
"$py" -c 'import care_serve.cli, grpc, PIL.Image, pillow_heif, onnxruntime as ort; ort.SessionOptions()'

