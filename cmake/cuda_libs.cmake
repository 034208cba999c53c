# cuDNN, cuBLAS/cuBLASLt and the CUDA runtime as one imported target, tb::cuda_libs.
# cuDNN ships no CMake config; on the GPU image it may live only inside PyTorch's wheels
# (site-packages/nvidia/cudnn), so look there too. Never link libcuda's stub: a CPU-only
# machine could not start the binary. NVML is loaded with dlopen at run time.
find_package(CUDAToolkit REQUIRED)

set(_tb_cudnn_hints ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda $ENV{CUDNN_ROOT})
file(GLOB _tb_py_cudnn /usr/lib/python3*/site-packages/nvidia/cudnn /usr/local/lib/python3*/dist-packages/nvidia/cudnn
  /opt/*/.venv/lib/python3*/site-packages/nvidia/cudnn)
list(APPEND _tb_cudnn_hints ${_tb_py_cudnn})
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_tb_cudnn_hints} PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${_tb_cudnn_hints} PATH_SUFFIXES lib64 lib)
if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
  message(FATAL_ERROR "CUDA backend: cuDNN not found (set CUDNN_ROOT, or -DTRAINBENCH_CUDA=OFF)")
endif()
message(STATUS "trainbench: cuDNN ${CUDNN_LIBRARY}")

add_library(tb_cuda_libs INTERFACE)
add_library(tb::cuda_libs ALIAS tb_cuda_libs)
target_include_directories(tb_cuda_libs INTERFACE ${CUDNN_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(tb_cuda_libs INTERFACE CUDA::cudart CUDA::cublasLt CUDA::cublas ${CUDNN_LIBRARY})
