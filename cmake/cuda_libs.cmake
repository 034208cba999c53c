# cuDNN, cuBLAS/cuBLASLt, NCCL and the CUDA runtime as one interface target, tb::cuda_libs.
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
add_library(tb::cudnn UNKNOWN IMPORTED)
set_target_properties(tb::cudnn PROPERTIES IMPORTED_LOCATION ${CUDNN_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${CUDNN_INCLUDE_DIR})

add_library(tb_cuda_libs INTERFACE)
add_library(tb::cuda_libs ALIAS tb_cuda_libs)
target_include_directories(tb_cuda_libs INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
# cuBLASLt from the toolkit; an image whose toolkit lacks it may still have PyTorch's copy. Its
# headers are used, the library is not linked: it sets itself up when loaded (about 200 MB and
# 0.4 s at every start, CPU runs and --help included), so the backend loads it with dlopen when
# it first needs it (src/backends/cuda/cublaslt.cpp), by soname, else from the path found here.
if(TARGET CUDA::cublasLt)
  set(_tb_cublaslt ${CUDA_cublasLt_LIBRARY})
else()
  file(GLOB _tb_py_cublas /usr/lib/python3*/site-packages/nvidia/cublas /usr/local/lib/python3*/dist-packages/nvidia/cublas
    /opt/*/.venv/lib/python3*/site-packages/nvidia/cublas $ENV{CUBLAS_ROOT})
  find_path(CUBLASLT_INCLUDE_DIR cublasLt.h HINTS ${_tb_py_cublas} PATH_SUFFIXES include)
  find_library(CUBLASLT_LIBRARY NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12 HINTS ${_tb_py_cublas} PATH_SUFFIXES lib lib64)
  if(NOT CUBLASLT_INCLUDE_DIR OR NOT CUBLASLT_LIBRARY)
    message(FATAL_ERROR "CUDA backend: cuBLASLt not found (set CUBLAS_ROOT, or -DTRAINBENCH_CUDA=OFF)")
  endif()
  set(_tb_cublaslt ${CUBLASLT_LIBRARY})
  target_include_directories(tb_cuda_libs INTERFACE ${CUBLASLT_INCLUDE_DIR})
endif()
get_filename_component(_tb_cublaslt ${_tb_cublaslt} REALPATH)  # the versioned file, not a dev link
message(STATUS "trainbench: cuBLASLt ${_tb_cublaslt} (loaded when the CUDA backend starts)")
target_compile_definitions(tb_cuda_libs INTERFACE "TRAINBENCH_CUBLASLT_LIBRARY=\"${_tb_cublaslt}\"")
target_link_libraries(tb_cuda_libs INTERFACE CUDA::cudart tb::cudnn)

# NCCL, from the toolkit folder or PyTorch's wheels (no CMake config ships for it either), as the
# imported target tb::nccl: its header, and the library's path for dlopen. It is loaded at run
# time, not linked: one GPU needs no collective, so `devices` and the run record name its
# version where it loads and "none" where it does not, and no binary fails to start for want of
# it. Optional at build time too: the configure output says when it is missing.
file(GLOB _tb_py_nccl /usr/lib/python3*/site-packages/nvidia/nccl /usr/local/lib/python3*/dist-packages/nvidia/nccl
  /opt/*/.venv/lib/python3*/site-packages/nvidia/nccl)
set(_tb_nccl_hints ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda $ENV{NCCL_ROOT} ${_tb_py_nccl})
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_tb_nccl_hints} PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_tb_nccl_hints} PATH_SUFFIXES lib64 lib)
if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  add_library(tb::nccl INTERFACE IMPORTED)
  set_target_properties(tb::nccl PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR}
    INTERFACE_COMPILE_DEFINITIONS "TRAINBENCH_HAVE_NCCL=1;TRAINBENCH_NCCL_LIBRARY=\"${NCCL_LIBRARY}\"")
  target_link_libraries(tb_cuda_libs INTERFACE tb::nccl)
  message(STATUS "trainbench: NCCL ${NCCL_LIBRARY} (loaded at run time)")
else()
  message(STATUS "trainbench: NCCL not found (set NCCL_ROOT); built without it, single-GPU only")
endif()

# CMake before 3.26 knows no C++20 switch for nvcc, so CMAKE_CUDA_STANDARD 20 fails at generate
# time ("requires the language dialect CUDA20"); nvcc 12+ takes -std=c++20.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
