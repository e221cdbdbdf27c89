// Time ggml's CPU mul_mat (llama.cpp's matmul) at given shapes, printing the same
// columns as `cargo run --release -p engine-quant --example matmul_bench`, so that
// benches/cpu-vs-llamacpp.sh can put the two side by side.
//
//   ggml_mul_mat_bench THREADS TYPE ROWSxCOLS M SECONDS [cold] [cpu]
//
// TYPE is q4_0, q4_1, q5_0, q5_1, q8_0, q2_k .. q6_k, f16 or f32; weights are random
// N(0, 0.05^2) values quantized by ggml, activations N(0, 1). The time is the fastest
// run of a persistent thread pool's graph compute (the minimum is the estimate least
// disturbed by other load). `cold` cycles through copies of the weights filling
// 512 MiB, so each run streams them from memory, as in a decode step. `cpu` (with one
// thread, which ggml then runs on the calling thread) times by the thread's CPU time,
// which on a loaded machine leaves out the time spent waiting for a core.
//
// Weights live in a plain ggml context: no CPU "repack" buffer, which is what llama.cpp
// runs for Q4_1 and Q8_0 on x86 (it repacks Q4_0, Q4_K, Q6_K and IQ4_NL only).
#include "ggml.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int use_cpu_time = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(use_cpu_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float gauss(void) {
    // Box-Muller on xorshift64 uniforms.
    double u[2];
    for (int i = 0; i < 2; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        u[i] = ((rng >> 11) + 1.0) / 9007199254740993.0;
    }
    return (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

static enum ggml_type parse_type(const char * s) {
    static const struct { const char * name; enum ggml_type t; } types[] = {
        {"f32", GGML_TYPE_F32}, {"f16", GGML_TYPE_F16}, {"q4_0", GGML_TYPE_Q4_0},
        {"q4_1", GGML_TYPE_Q4_1}, {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1},
        {"q8_0", GGML_TYPE_Q8_0}, {"q2_k", GGML_TYPE_Q2_K}, {"q3_k", GGML_TYPE_Q3_K},
        {"q4_k", GGML_TYPE_Q4_K}, {"q5_k", GGML_TYPE_Q5_K}, {"q6_k", GGML_TYPE_Q6_K},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(s, types[i].name) == 0) return types[i].t;
    }
    fprintf(stderr, "unknown type %s\n", s);
    exit(2);
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s THREADS TYPE ROWSxCOLS M SECONDS [cold] [cpu]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    enum ggml_type type = parse_type(argv[2]);
    long rows = 0, cols = 0;
    if (sscanf(argv[3], "%ldx%ld", &rows, &cols) != 2) {
        fprintf(stderr, "shape %s is not ROWSxCOLS\n", argv[3]);
        return 2;
    }
    long m = atol(argv[4]);
    double seconds = atof(argv[5]);
    int cold = 0;
    for (int i = 6; i < argc; i++) {
        cold |= strcmp(argv[i], "cold") == 0;
        use_cpu_time |= strcmp(argv[i], "cpu") == 0;
    }
    if (use_cpu_time && threads != 1) {
        fprintf(stderr, "cpu time measures one thread: use THREADS = 1\n");
        return 2;
    }

    size_t wbytes = ggml_row_size(type, cols) * rows;
    int copies = cold ? (int)((512ull << 20) / wbytes) : 1;
    if (copies < 1) copies = 1;
    if (copies > 4096) copies = 4096;

    size_t mem = copies * (wbytes + 1024) + (size_t)(m * cols + m * rows) * 4 * copies
                 + ggml_graph_overhead() * copies + (64 << 20);
    struct ggml_init_params ip = { mem, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    if (!ctx) { fprintf(stderr, "ggml_init failed (%zu bytes)\n", mem); return 1; }

    float * src = malloc(sizeof(float) * rows * cols);
    for (long i = 0; i < rows * cols; i++) src[i] = 0.05f * gauss();
    struct ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, m);
    for (long i = 0; i < m * cols; i++) ((float *) x->data)[i] = gauss();

    struct ggml_cgraph ** graphs = malloc(sizeof(*graphs) * copies);
    struct ggml_tensor * first = NULL;
    for (int c = 0; c < copies; c++) {
        struct ggml_tensor * w = ggml_new_tensor_2d(ctx, type, cols, rows);
        if (c == 0) {
            first = w;
            if (type == GGML_TYPE_F32) {
                memcpy(w->data, src, wbytes);
            } else if (type == GGML_TYPE_F16) {
                ggml_fp32_to_fp16_row(src, w->data, rows * cols);
            } else {
                ggml_quantize_chunk(type, src, w->data, 0, rows, cols, NULL);
            }
        } else {
            memcpy(w->data, first->data, wbytes);
        }
        struct ggml_tensor * y = ggml_mul_mat(ctx, w, x);
        graphs[c] = ggml_new_graph(ctx);
        ggml_build_forward_expand(graphs[c], y);
    }

    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
    struct ggml_threadpool * tp = ggml_threadpool_new(&tpp);
    struct ggml_cplan plan = ggml_graph_plan(graphs[0], threads, tp);
    uint8_t * work = malloc(plan.work_size + 64);
    plan.work_data = work;

    double best = 1e30, start = now();
    int runs = 0;
    for (int c = 0; runs < 6 || now() - start < seconds; c = (c + 1) % copies, runs++) {
        double t = now();
        if (ggml_graph_compute(graphs[c], &plan) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "compute failed\n");
            return 1;
        }
        t = now() - t;
        if (runs > 0 && t < best) best = t;
    }
    printf("%s\t%ld\t%ld\t%ld\t%.1f\t%.2f\t%.1f\n", argv[2], rows, cols, m, best * 1e6,
           wbytes / best / 1e9, 2.0 * m * rows * cols / best / 1e9);
    ggml_threadpool_free(tp);
    free(work);
    free(src);
    free(graphs);
    ggml_free(ctx);
    return 0;
}
