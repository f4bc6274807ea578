// Measures the device memory a CUDA process holds before any model byte: the context alone,
// then with a cuBLAS handle that has run a BF16 GEMM (what an inference engine always has).
// Prints one JSON object. Build: nvcc -O2 -o cuda_overhead cuda_overhead.cu -lcublas
#include <cstdio>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

static size_t used() {
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  return total_b - free_b;
}

int main() {
  size_t before_total = 0, before_free = 0;
  cudaFree(0);  // creates the primary context
  cudaDeviceSynchronize();
  cudaMemGetInfo(&before_free, &before_total);
  size_t ctx = before_total - before_free;
  cublasHandle_t h;
  cublasCreate(&h);
  const int n = 4096;
  __nv_bfloat16 *a, *c;
  cudaMalloc(&a, sizeof(__nv_bfloat16) * n * n);
  cudaMalloc(&c, sizeof(__nv_bfloat16) * n * n);
  float alpha = 1.0f, beta = 0.0f;
  cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, a, CUDA_R_16BF, n,
               &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cudaDeviceSynchronize();
  size_t after = used();
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  size_t mats = 2 * sizeof(__nv_bfloat16) * (size_t)n * n;
  printf("{\"device\": \"%s\", \"total_mib\": %.0f, \"driver_and_context_mib\": %.1f, "
         "\"with_cublas_gemm_mib\": %.1f}\n",
         p.name, before_total / 1048576.0, ctx / 1048576.0, (after - mats) / 1048576.0);
  return 0;
}
