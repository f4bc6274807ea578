// ggml's reference quantization of f32 rows (no importance matrix), for forja's goldens.
// Usage: ggml_quant TYPE_ID N_PER_ROW < rows.f32 > quantized.bin
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
int main(int argc, char **argv) {
    int ty = atoi(argv[1]); long n = atol(argv[2]);
    size_t cap = 1 << 26; float *x = malloc(cap * 4); size_t got = fread(x, 4, cap, stdin);
    long rows = got / n;
    size_t rb = ggml_row_size((enum ggml_type)ty, n);
    void *out = malloc(rb * rows);
    size_t w = ggml_quantize_chunk((enum ggml_type)ty, x, out, 0, rows, n, NULL);
    fwrite(out, 1, w, stdout);
    return 0;
}
