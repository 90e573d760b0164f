# The native backend addon. scripts/build-native.mjs detects the libraries and passes
# -Dknobs_openblas=0|1 -Dknobs_dnnl=0|1 -Dknobs_prefer=openblas|onednn; run that script rather than node-gyp.
{
  "variables": {
    "knobs_openblas%": "0",
    "knobs_dnnl%": "0",
    "knobs_prefer%": "onednn",
  },
  "targets": [
    {
      "target_name": "knobs",
      "sources": [
        "native/binding.cpp",
        "native/kernels/runtime.cpp",
        "native/kernels/matmul.cpp",
        "native/kernels/lora.cpp",
        "native/kernels/matmul_bf16.cpp",
        "native/kernels/elementwise.cpp",
        "native/kernels/reduce.cpp",
        "native/kernels/rows.cpp",
        "native/kernels/conv.cpp",
        "native/kernels/conv_dnnl.cpp",
        "native/kernels/softmax.cpp",
        "native/kernels/norm.cpp",
        "native/kernels/attention.cpp",
        "native/kernels/decode.cpp",
        "native/kernels/optim.cpp",
        "native/kernels/qmatmul.cpp",
        "native/kernels/bi_decode.cpp",
        "native/kernels/bi_matmul_kn.cpp",
      ],
      "include_dirs": ["native"],
      "cflags!": ["-O2", "-O0"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O0", "-std=gnu++17", "-std=gnu++1y"],
      "cflags": ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wno-unused-function"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "conditions": [
        ["target_arch=='x64'", {"cflags": ["-march=x86-64-v2", "-mtune=generic"]}],
        ["knobs_openblas==1", {"defines": ["KN_HAVE_OPENBLAS"], "libraries": ["-lopenblas"]}],
        ["knobs_dnnl==1", {"defines": ["KN_HAVE_DNNL"], "libraries": ["-ldnnl", "-lgomp"]}],
        ["knobs_prefer=='openblas'", {"defines": ["KN_PREFER_OPENBLAS"]}],
      ],
    }
  ]
}
