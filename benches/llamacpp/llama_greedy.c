// Greedy decoding with llama.cpp, for comparing the engine's top-1 tokens with its own.
//
//   llama_greedy MODEL.gguf STEPS THREADS [KV_TYPE] < prompts.txt > picks.txt
//
// KV_TYPE: f16 (default: llama.cpp's defaults, an f16 cache and flash attention where
// supported) or f32 (an f32 cache and plain attention, as the engine's CPU path).
// Each stdin line is one prompt as token ids (decimal, space separated: the engine's
// tokenizer made them, so both sides start from the same ids). For each prompt the
// program decodes STEPS tokens greedily, one llama_decode per token, and prints one
// line per step: `PROMPT STEP TOKEN MARGIN`, where TOKEN is llama.cpp's argmax (the
// token it feeds next) and MARGIN the gap between its two largest logits.
//
// With LLAMA_LOGITS=FILE in the environment it also writes each step's whole logit row
// to FILE, raw native-endian f32 (n_vocab values per step, prompts and steps in the
// order of the printed lines), for comparing full rows (crates/model/tests/
// quant_vs_llamacpp.rs).
//
// With LLAMA_TENSORS=DIR it writes every f32 tensor that the first llama_decode (the
// first prompt) computes, as DIR/NNN-NAME.f32 (raw f32, NNN its order in the graph),
// and lists them in DIR/index.txt as `NNN NAME NE0 NE1 NE2 NE3`: llama.cpp's
// intermediate values, for comparing one op at a time.
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dump_state {
    const char *dir;
    FILE *index;
    int count;
    int done; // set after the first llama_decode
};

static bool dump_tensor(struct ggml_tensor *t, bool ask, void *user) {
    struct dump_state *st = user;
    if (st->done || t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        return ask ? false : true;
    }
    if (ask) {
        return true;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%03d-%s.f32", st->dir, st->count, t->name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(t->data, 1, ggml_nbytes(t), f) != ggml_nbytes(t) || fclose(f) != 0) {
        fprintf(stderr, "%s: write failed\n", path);
        return false;
    }
    fprintf(st->index, "%03d %s %lld %lld %lld %lld\n", st->count++, t->name, (long long)t->ne[0],
            (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    return true;
}

static void top2(const float *v, int n, int *best, float *margin) {
    int b = 0;
    float first = v[0], second = -1e30f;
    for (int i = 1; i < n; i++) {
        if (v[i] > first) {
            second = first;
            first = v[i];
            b = i;
        } else if (v[i] > second) {
            second = v[i];
        }
    }
    *best = b;
    *margin = first - second;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf STEPS THREADS [f16|f32] < prompts.txt\n", argv[0]);
        return 2;
    }
    int steps = atoi(argv[2]), threads = atoi(argv[3]);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "%s: cannot load the model\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    if (argc == 5 && strcmp(argv[4], "f32") == 0) {
        // As the engine's CPU path: an f32 cache and plain attention (ggml's CPU flash
        // attention rounds to f16 inside).
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    struct dump_state dump_st = {getenv("LLAMA_TENSORS"), NULL, 0, 0};
    if (dump_st.dir && *dump_st.dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/index.txt", dump_st.dir);
        if (!(dump_st.index = fopen(path, "w"))) {
            fprintf(stderr, "%s: cannot create it\n", path);
            return 1;
        }
        cp.cb_eval = dump_tensor;
        cp.cb_eval_user_data = &dump_st;
    }
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const char *dump_path = getenv("LLAMA_LOGITS");
    FILE *dump = NULL;
    if (dump_path && *dump_path) {
        dump = fopen(dump_path, "wb");
        if (!dump) {
            fprintf(stderr, "%s: cannot create the logits file\n", dump_path);
            return 1;
        }
    }

    static char line[1 << 16];
    llama_token tokens[1024];
    for (int k = 0; fgets(line, sizeof line, stdin); k++) {
        int n = 0;
        for (char *t = strtok(line, " \n"); t && n < 512; t = strtok(NULL, " \n")) {
            tokens[n++] = (llama_token)atoi(t);
        }
        if (n == 0) {
            continue;
        }
        llama_memory_clear(llama_get_memory(ctx), true);
        if (llama_decode(ctx, llama_batch_get_one(tokens, n)) != 0) {
            fprintf(stderr, "prompt %d: llama_decode failed\n", k);
            return 1;
        }
        if (dump_st.index && !dump_st.done) {
            dump_st.done = 1;
            fclose(dump_st.index);
        }
        for (int s = 0; s < steps; s++) {
            int best;
            float margin;
            const float *logits = llama_get_logits_ith(ctx, -1);
            top2(logits, n_vocab, &best, &margin);
            if (dump && fwrite(logits, sizeof(float), n_vocab, dump) != (size_t)n_vocab) {
                fprintf(stderr, "%s: write failed\n", dump_path);
                return 1;
            }
            printf("%d %d %d %.5f\n", k, s, best, margin);
            llama_token next = best;
            if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) {
                fprintf(stderr, "prompt %d step %d: llama_decode failed\n", k, s);
                return 1;
            }
        }
    }
    if (dump && fclose(dump) != 0) {
        fprintf(stderr, "%s: write failed\n", dump_path);
        return 1;
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
